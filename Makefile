# The two commands a newcomer needs: `make demo` and `make test` (see README).
.PHONY: demo test deps typecheck lint format bench clean-sandbox

deps:
	@scripts/install-deps.sh

# MODE=nftables (default) or iptables.
demo: deps
	@MODE=$(MODE) ./node_modules/node/bin/node src/demo/main.ts

typecheck: deps
	@npx tsc --noEmit -p .

# One formatter and linter for the whole tree (biome.json); `make format` rewrites, `lint` only checks.
lint: deps
	@npx biome check .

format: deps
	@npx biome check --write .

test: deps typecheck lint
	@npx vitest run

bench: deps
	@npm run --silent bench
