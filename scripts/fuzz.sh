#!/usr/bin/env bash
# `make fuzz`: runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each, starting
# from the committed seed corpora, and stops at the first crash (libFuzzer writes the input to
# fuzz/artifacts/<target>/). cargo-fuzz needs nightly features; this machine has only stable, so
# RUSTC_BOOTSTRAP=1 unlocks them (the sanitizer runtimes ship with the stable toolchain).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
targets=${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir fuzz)}
for t in $targets; do
  echo "=== fuzz $t for ${SECONDS_EACH}s"
  mkdir -p "fuzz/corpus/$t"
  # Generated inputs go to a scratch corpus; the committed seeds stay small and readable.
  scratch="target/fuzz-corpus/$t"
  mkdir -p "$scratch"
  # The run's own status decides (pipefail; the filter never fails): a target that does not
  # build fails here too. (`PIPESTATUS` read after `|| true` was `true`'s, so a target that no
  # longer compiled passed as "no crash".)
  status=0
  cargo fuzz run --fuzz-dir fuzz "$t" "$scratch" "fuzz/corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    { grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==|SUMMARY|Done |error)" || true; } ||
    status=$?
  ((status == 0)) || { echo "fuzz target $t FAILED, status $status (a build error above, or see fuzz/artifacts/$t/)"; exit 1; }
done
echo "fuzzing done: ${SECONDS_EACH}s per target, no crash"
