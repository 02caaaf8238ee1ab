# The two commands a newcomer needs: `make demo` and `make test` (see README).
.PHONY: demo test deps typecheck lint format bench clean-sandbox

deps:
	@scripts/install-deps.sh

# MODE=nftables (default), iptables or ipvs.
# MODE=ipvs runs the demo inside the IPVS VM (scripts/ipvs-vm/run.sh: this kernel may have no IPVS;
# a few minutes under emulation, most of it Node starting up).
demo: deps
ifeq ($(MODE),ipvs)
	@scripts/ipvs-vm/run.sh 'MODE=ipvs NODE_COMPILE_CACHE=$(CURDIR)/.cache/node-compile-cache ./node_modules/node/bin/node src/demo/main.ts'
else
	@MODE=$(MODE) ./node_modules/node/bin/node src/demo/main.ts
endif

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

# The IPVS VM (scripts/ipvs-vm/README.md): install QEMU, fetch the Debian kernel, build the initramfs.
.PHONY: ipvs-vm-setup
ipvs-vm-setup:
	@scripts/ipvs-vm/run.sh --setup
