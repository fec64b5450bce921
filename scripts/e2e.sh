#!/usr/bin/env bash
# `make e2e`: build the container images here (scripts/build-local-images.sh: local Debian base
# image, reused when present; host-built release binaries), then bring the compose stack up on
# this machine's Docker engine and test it from outside (scripts/e2e_compose.py). The stack is
# torn down at the end, also on failure or interruption.
#
#   E2E_SKIP_IMAGES=1 make e2e     reuse the images already built (infergate/*:local)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker >/dev/null 2>&1; then
  echo "e2e: docker is not installed; cannot run the compose end-to-end test" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "e2e: the Docker engine does not answer (docker info); cannot run the compose end-to-end test" >&2
  exit 1
fi

export INFERGATE_TAG=${INFERGATE_TAG:-local}
start=$(date +%s)
if [[ -z "${E2E_SKIP_IMAGES:-}" ]]; then
  scripts/build-local-images.sh
else
  echo "e2e: E2E_SKIP_IMAGES set; using the existing infergate/*:$INFERGATE_TAG images" >&2
fi
images_done=$(date +%s)

# e2e_compose.py tears the stack down itself; this covers it being killed outright.
started=""
cleanup() { if [[ -n "$started" ]]; then python3 scripts/e2e_compose.py --teardown >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT
started=1
# The test prints the timings (images included) and ends with its `e2e: N passed, N failed` line.
E2E_IMAGES_SECONDS=$((images_done - start)) python3 scripts/e2e_compose.py
started=""  # it tore the stack down itself
