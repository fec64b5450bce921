#!/usr/bin/env bash
# `make bench-redis-instructions`: redis-server's instructions per rate-limit check (check.lua),
# counted by callgrind, for the working tree and any git revisions given.
#
# Why: redis-server shares the load core in `make bench`'s Redis rows, so what a check costs the
# server sets those rows' pace as much as the gateway does; and a timed redis-benchmark of the
# script moves by 20 % from run to run on this machine, where an instruction count repeats to
# within 0.1 %. The check is the bench's shape: three sliding-window buckets (per IP, per key, per
# endpoint), all admitted, the server's clock (`TIME`), pipelined 16 deep on one connection.
# The count includes what redis-server does for any EVALSHA of that size (reading the command,
# building KEYS and ARGV, the reply): `EVAL "return 1"` with the same arguments is ~33 k.
#
# Usage: scripts/bench/redis-instructions.sh [REV...]   ("" or no argument: the working tree)
#   BENCH_REDIS_CALLS  measured calls per script (default 20000)
set -euo pipefail
cd "$(dirname "$0")/../.."
CALLS=${BENCH_REDIS_CALLS:-20000}

die() {
  printf 'bench-redis-instructions: %s\n' "$*" >&2
  exit 1
}
missing=()
for tool in valgrind callgrind_annotate callgrind_control redis-server redis-cli redis-benchmark; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die "missing tools: ${missing[*]}; run as root or: sudo apt-get install valgrind redis-server redis-tools"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind redis-server redis-tools >/dev/null ||
    die "apt-get install failed"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/infergate-redis-instructions.XXXXXX")
SERVER=
cleanup() {
  [[ -n $SERVER ]] && kill "$SERVER" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/cg.out" \
  redis-server --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no --loglevel warning \
  >"$TMP/redis.log" 2>&1 &
SERVER=$!
for ((i = 0; i < 150; i++)); do
  redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
  sleep 0.2
done
redis-cli -p "$PORT" ping >/dev/null 2>&1 || die "redis-server under callgrind did not start: $(tail -n 5 "$TMP/redis.log")"

# Three buckets, each: period 60000 ms, limit 10^9, cost 1, sliding (-1), not a shadow limit.
ARGS=(3 '{bench}:ip' '{bench}:key' '{bench}:endpoint' "" 0 0 3)
for _ in 1 2 3; do ARGS+=(60000 1000000000 1 -1 0); done

(($# > 0)) || set -- ""
printf '%-24s %16s\n' "check.lua" "instr/check"
for rev in "$@"; do
  script=$TMP/check.lua
  if [[ -z $rev ]]; then
    cat crates/ratelimit/src/redis/common.lua crates/ratelimit/src/redis/check.lua >"$script"
  else
    { git show "$rev:crates/ratelimit/src/redis/common.lua" && git show "$rev:crates/ratelimit/src/redis/check.lua"; } >"$script" ||
      die "no check script at $rev"
  fi
  sha=$(redis-cli -p "$PORT" SCRIPT LOAD "$(cat "$script")")
  [[ $sha =~ ^[0-9a-f]{40}$ ]] || die "SCRIPT LOAD failed at ${rev:-the working tree}: $sha"
  redis-benchmark -p "$PORT" -n 2000 -c 1 -P 16 -q EVALSHA "$sha" "${ARGS[@]}" >/dev/null 2>&1
  rm -f "$TMP"/cg.out.*
  callgrind_control -z "$SERVER" >/dev/null 2>&1
  callgrind_control -i on "$SERVER" >/dev/null 2>&1
  redis-benchmark -p "$PORT" -n "$CALLS" -c 1 -P 16 -q EVALSHA "$sha" "${ARGS[@]}" >/dev/null 2>&1
  callgrind_control -i off "$SERVER" >/dev/null 2>&1
  callgrind_control -d "$SERVER" >/dev/null 2>&1
  dump=$(ls -t "$TMP"/cg.out.* 2>/dev/null | head -1 || true)
  [[ -n $dump ]] || die "no callgrind dump"
  total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  printf '%-24s %16s\n' "${rev:-working tree}" "$((total / CALLS))"
done
