#!/usr/bin/env bash
# `make bench-instructions`: the gateway's instructions per request under callgrind, on the fast
# scenario of `make bench` (POST /v1/chat/completions with every policy on and the JSON access log
# to a file, in front of the nginx stub).
#
# Why: on this shared machine a change worth 2 % of the gateway's CPU is inside the noise of any
# timed run (nginx's own CPU per request moves by 15 % between runs). Instructions counted by
# callgrind do not move: the same binary reads the same figure to within ~0.1 % run after run, so
# a before/after pair of builds says what a change bought. Counting starts after a warm-up
# (callgrind's instrumentation is switched on for the measured run only) and is divided by the
# requests wrk completed; every thread of the gateway is counted (the log writer too).
#
# Read it as a relative figure. callgrind counts each byte a `rep stosb` stores as an instruction
# (actix-http zeroes a 3 KiB header index for every parse: ~18 k of the count) and runs the
# software SHA-256 where the CPU has SHA extensions (~7 k); both are in every build alike.
#
# Usage: scripts/bench/instructions.sh [GATEWAY_BIN...]   (default: the release build made here)
#   BENCH_CG_DURATION  measured seconds per binary (default 10)
#   BENCH_CG_LIMITER   memory (default) or redis: the Redis limiter against a private
#                      redis-server on CPU 0 (what the Redis path costs the gateway's own core)
#   BENCH_REDIS_LAYOUT counters (default) or hashes: RATE_LIMIT_REDIS_LAYOUT of the Redis limiter
#   BENCH_NO_INSTALL   1 = never call apt-get (fail if valgrind/wrk/nginx/curl are missing)
#   BENCH_CG_FLOOR     1 = also count the floor (examples/floor.rs: the parts, no policies)
#   BENCH_CG_KEEP      a directory: each binary's callgrind dump is copied there (callgrind.N.out,
#                      N its position in the list) for callgrind_annotate --inclusive=yes
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=gateway-setup.sh
. scripts/bench/gateway-setup.sh
DURATION=${BENCH_CG_DURATION:-10}
LIMITER=${BENCH_CG_LIMITER:-memory}

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'bench-instructions: %s\n' "$*" >&2
  exit 1
}

missing=()
[[ $LIMITER == memory || $LIMITER == redis ]] || die "BENCH_CG_LIMITER must be memory or redis, got '$LIMITER'"
tools=(valgrind callgrind_annotate wrk nginx curl taskset)
[[ $LIMITER == redis ]] && tools+=(redis-server redis-cli)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  [[ ${BENCH_NO_INSTALL:-0} == 1 ]] && die "missing tools: ${missing[*]} (BENCH_NO_INSTALL=1)"
  [[ $(id -u) -eq 0 ]] || die "missing tools: ${missing[*]}; run as root or: sudo apt-get install valgrind wrk nginx-light curl redis-server"
  log "installing valgrind wrk nginx-light curl redis-server with apt-get"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind wrk nginx-light curl redis-server >/dev/null ||
    die "apt-get install failed"
fi

if (($# == 0)); then
  log "building the release gateway"
  cargo build --release -q -p infergate-gateway
  set -- "$ROOT/target/release/infergate-gateway"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/infergate-instructions.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ -f $TMP/stub.pid ]] && kill "$(cat "$TMP/stub.pid")" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_up() { # URL: polls until it answers (valgrind starts slowly)
  local i
  for ((i = 0; i < 300; i++)); do
    curl -sf -o /dev/null --max-time 2 "$1" && return 0
    sleep 0.2
  done
  return 1
}

# The nginx stub upstream, as make bench starts it, on CPU 0.
STUB_PORT=$(free_port)
USER_DIRECTIVE="# (not root)"
[[ $(id -u) -eq 0 ]] && USER_DIRECTIVE="user $(id -un) $(id -gn);"
mkdir -p "$TMP/stub-tmp"
head -c 1048576 /dev/zero >"$TMP/1mib.bin"
sed -e "s|@TMP@|$TMP|g" -e "s|@PORT@|$STUB_PORT|g" -e "s|@USER_DIRECTIVE@|$USER_DIRECTIVE|g" \
  scripts/bench/nginx-stub.conf.template >"$TMP/stub.conf"
taskset -c 0 nginx -p "$TMP" -e "$TMP/stub-error.log" -c "$TMP/stub.conf" || die "the nginx stub did not start"
wait_up "http://127.0.0.1:$STUB_PORT/health" || die "the nginx stub did not answer"

USER_KEY="igk_bench_user_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"

# The Redis limiter's private redis-server, on CPU 0 as make bench runs it (no persistence).
LIMITER_ENV=()
if [[ $LIMITER == redis ]]; then
  REDIS_PORT=$(free_port)
  taskset -c 0 redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$TMP" --save "" \
    --appendonly no --daemonize no --loglevel warning >"$TMP/redis.log" 2>&1 &
  PIDS+=("$!")
  for ((i = 0; i < 100; i++)); do
    [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && break
    sleep 0.1
  done
  [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] || die "redis-server did not start: $(tail -n 5 "$TMP/redis.log")"
  LIMITER_ENV=(RATE_LIMIT_STORAGE=redis "RATE_LIMIT_REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
    "RATE_LIMIT_REDIS_LAYOUT=${BENCH_REDIS_LAYOUT:-counters}")
fi

# measure LABEL PORT PROGRAM ARGS...: starts PROGRAM under callgrind on CPU 1 with exactly RUN_ENV,
# warms it up, counts the instructions of every thread over a DURATION-second wrk run and prints
# them per request.
measure() {
  local label=$1 port=$2
  shift 2
  local out=$TMP/callgrind.out
  rm -f "$out"*
  (
    cd "$TMP"
    exec env -i "${RUN_ENV[@]}" \
      taskset -c 1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" "$@"
  ) >"$TMP/gateway.log" 2>&1 &
  local gw=$!
  PIDS+=("$gw")
  wait_up "http://127.0.0.1:$port/health" || die "$label under callgrind did not answer (see $TMP/gateway.log)"
  load() {
    taskset -c 0 wrk -t1 -c8 -d"$1"s -s scripts/bench/chat.lua -H "X-API-Key: $USER_KEY" "http://127.0.0.1:$port"
  }
  load 3 >/dev/null
  callgrind_control -i on "$gw" >/dev/null 2>&1
  local result
  result=$(load "$DURATION")
  callgrind_control -i off "$gw" >/dev/null 2>&1
  callgrind_control -d "$gw" >/dev/null 2>&1
  kill "$gw" 2>/dev/null || true
  wait "$gw" 2>/dev/null || true
  local requests non2xx dump total
  requests=$(awk '/requests in/ {print $1}' <<<"$result")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$result")
  [[ -z $non2xx ]] || die "$label: $non2xx non-2xx answers"
  dump=$(ls "$out".1 "$out".*.1 2>/dev/null | head -1 || true)
  [[ -n $dump && -n $requests ]] || die "$label: no callgrind dump or wrk count"
  if [[ -n ${BENCH_CG_KEEP:-} ]]; then
    mkdir -p "$BENCH_CG_KEEP"
    kept=$((${kept:-0} + 1))
    cp "$dump" "$BENCH_CG_KEEP/callgrind.$kept.out"
  fi
  total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  printf '%-60s %10s %14s\n' "$label" "$requests" "$((total / requests))"
}

printf 'limiter: %s\n' "$LIMITER"
printf '%-60s %10s %14s\n' "gateway" "requests" "instr/request"
for bin in "$@"; do
  [[ -x $bin ]] || die "not an executable: $bin"
  # The gateway runs from $TMP: a relative path would name nothing there.
  bin=$(realpath "$bin")
  port=$(free_port)
  gateway_setup "$TMP" "$port" "$STUB_PORT" "$USER_KEY:user" https://app.bench.example
  RUN_ENV=("${GATEWAY_ENV[@]}" "${LIMITER_ENV[@]}")
  measure "$bin" "$port" "$bin" --config "$TMP/gateway.yaml"
done

# The floor (services/gateway/examples/floor.rs): the gateway's parts with none of its policies.
# What a build costs above it is its pipeline.
if [[ ${BENCH_CG_FLOOR:-0} == 1 ]]; then
  log "building the floor (release)"
  cargo build --release -q -p infergate-gateway --example floor
  port=$(free_port)
  RUN_ENV=(PATH="$PATH" HOME="${HOME:-/root}")
  measure "floor (no policies)" "$port" "$ROOT/target/release/examples/floor" \
    "127.0.0.1:$port" "http://127.0.0.1:$STUB_PORT"
fi
