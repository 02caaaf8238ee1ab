# The two commands a newcomer needs: `make demo` and `make test` (see README).
.PHONY: demo test deps typecheck bench clean-sandbox

deps:
	@scripts/install-deps.sh

demo: deps
	@./node_modules/node/bin/node src/demo/main.ts

typecheck: deps
	@npx tsc --noEmit -p .

test: deps typecheck
	@npx vitest run

bench: deps
	@npm run --silent bench
