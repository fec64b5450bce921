# infergate — the two set-up commands are `make run` and `make test`.

CARGO ?= cargo
CONFIG ?= config/gateway.yaml

.PHONY: run test fmt lint check-config bench bench-pipeline bench-instructions bench-redis-instructions build clean

## Build and start the dev upstream and the gateway with the shipped config (installing curl,
## openssl and python3 for the README tour when missing: scripts/deps.sh).
run:
	@scripts/deps.sh run
	@scripts/run.sh

## fmt check, clippy with warnings as errors, every test (the services turn on the key store's and
## the limiter's `tls` features, so `rediss://` is tested against a TLS redis-server),
## schemathesis against both OpenAPI documents, the Kubernetes manifests, the README tour against
## make run's stack. Installs what they need first (scripts/deps.sh says what).
test:
	@scripts/deps.sh test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# The fuzz targets (their own workspace) type-checked without libFuzzer: one that stops
	@# compiling fails here, not only in `make fuzz`.
	$(CARGO) check --manifest-path fuzz/Cargo.toml --no-default-features --bins --target-dir target
	$(CARGO) test --workspace
	@scripts/schemathesis.sh
	@scripts/k8s-validate.sh
	@scripts/readme_tour.py

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build:
	$(CARGO) build --workspace --bins

## Validate the configuration and print the effective settings (secrets masked): JSON alone on
## stdout (`make -s check-config | jq`), the summary on stderr.
check-config:
	@$(CARGO) build -q -p infergate-gateway -p infergate-dev-upstream -p infergate-key-admin --bins
	@./target/debug/infergate-gateway --config $(CONFIG) check-config

## Load test: the gateway side by side with nginx doing the same job (docs/performance.md).
bench:
	@scripts/bench.sh

## The request pipeline in process, no sockets (criterion): time per request through every stage.
bench-pipeline:
	$(CARGO) bench -p infergate-gateway --bench pipeline

## Instructions per request under callgrind (fast scenario): a before/after figure the machine's
## noise does not move. `make bench-instructions BINS="old-build new-build"` compares builds;
## BENCH_CG_LIMITER=redis counts the Redis limiter's path (a private redis-server).
## BENCH_CG_FLOOR=1 also counts the floor (the parts without the policies).
bench-instructions:
	@scripts/bench/instructions.sh $(BINS)

## redis-server's instructions per rate-limit check (check.lua) under callgrind; `REVS="HEAD~3 ''"`
## compares git revisions with the working tree.
bench-redis-instructions:
	@scripts/bench/redis-instructions.sh $(REVS)

clean:
	$(CARGO) clean

.PHONY: fuzz schemathesis tour

## Run the README tour's commands against make run's stack and compare their output with the
## README's (also part of `make test`; needs ports 8000, 8001 and 9000 free).
tour:
	@scripts/readme_tour.py

## Fuzz every parser an attacker reaches (cargo-fuzz; FUZZ_SECONDS per target, default 60).
fuzz:
	@scripts/fuzz.sh

## schemathesis against both services' /openapi.json (also part of `make test`; ST_SEED and
## ST_EXAMPLES change the budget).
schemathesis:
	@scripts/schemathesis.sh

.PHONY: images e2e k8s-validate

## Container images with no registry: a local Debian base (debootstrap) + host-built release binaries.
images:
	@scripts/build-local-images.sh

## Build the images, bring the compose stack up on this Docker engine, test it end to end, tear it down.
e2e:
	@scripts/e2e.sh

## Render deploy/k8s's overlays and validate every object offline (schemas + security assertions).
k8s-validate:
	@scripts/k8s-validate.sh
