#!/usr/bin/env bash
# `make bench`: the infergate gateway side by side with nginx doing the same job, in one run.
#
# Targets, each in front of the same upstream, measured with the same wrk settings:
#   direct           wrk -> upstream (what the upstream can do; no proxy)
#   nginx            wrk -> nginx (scripts/bench/nginx-gateway.conf.template: API keys by `map`
#                    from X-API-Key and Bearer, limit_req per key and per IP, the security headers,
#                    CORS for one origin, keep-alive upstream pool, buffered JSON access log)
#   floor            wrk -> the gateway's parts with none of its policies
#                    (services/gateway/examples/floor.rs: the same HTTP server, upstream pool and
#                    header copying, no checks, no access log): what the parts cost, so that the
#                    gateway's row minus this one is what its pipeline costs
#   infergate        wrk -> infergate-gateway, RATE_LIMIT_STORAGE=memory
#   infergate-redis  the same with RATE_LIMIT_STORAGE=redis (a private redis-server)
# The gateway runs with every policy on: key auth, per-key and endpoint limits (raised so nothing
# is refused), security headers, CORS (CORS_ORIGINS, and wrk sends an Origin), signature
# scanning, JSON body validation, and the access log (LOG_LEVEL=info, LOG_FORMAT=json, to a file).
#
# Scenarios (BENCH_SCENARIOS, default "fast slow models"):
#   fast    POST /v1/chat/completions, small JSON body, 64 connections; the upstream is an nginx
#           stub answering a fixed completion (scripts/bench/nginx-stub.conf.template)
#   slow    the same request at 256 connections against the dev upstream with --latency-ms 50
#   models  GET /v1/models at 32 connections against the dev upstream (the figures earlier
#           versions of this script printed: gateway vs direct)
#
# CPU pinning (2 cores): the proxy under test alone on CPU 1; wrk, the upstream and redis-server
# on CPU 0. Every row reports the proxy's own CPU time per request (utime+stime from
# /proc/<pid>/stat over the measured run, divided by the requests wrk completed) and the kernel's
# part of it (stime alone: the `kernel` column), its RSS, and how busy each core was: a load core near 100 % means the load generator, not the proxy, set the
# pace of that row.
#
# Every scenario runs BENCH_ROUNDS times (default 3), targets interleaved within a round, so the
# ratios to nginx are taken within one round and the report shows their median and spread.
#
# Once, after the rounds (BENCH_EXTRAS=1, the default): the gateway's idle RSS; its peak RSS while
# 32 clients each stream a 1 MiB response through it; the memory limiter's resident size with one
# million tracked clients (crates/ratelimit/examples/million_clients.rs); and the Redis limiter's
# denied path (a spent key, refused from the local deny cache without a round trip).
#
# Environment knobs:
#   BENCH_DURATION     wrk -d per run (default 10s)
#   BENCH_WARMUP       warm-up before each measured run, same settings (default 2s; 0 = none)
#   BENCH_ROUNDS       rounds of every scenario (default 3; 0 = only the once-off figures)
#   BENCH_SCENARIOS    which scenarios, space separated (default "fast slow models")
#   BENCH_REDIS        1 (default) also measures the Redis limiter; 0 skips it
#   BENCH_FLOOR        1 (default) also measures the floor (the gateway's parts, no policies); 0 skips it
#   BENCH_EXTRAS       1 (default) the memory figures and the denied path; 0 skips them
#   BENCH_THREADS      wrk -t (default 2: one wrk thread cannot keep 256 connections busy)
#   BENCH_REDIS_TIMEOUT_MS  RATE_LIMIT_REDIS_TIMEOUT_MS of every gateway (default 50)
#   BENCH_REDIS_LAYOUT counters (default) or hashes: RATE_LIMIT_REDIS_LAYOUT of the Redis rows
#   BENCH_PORT_BASE    first port to try for the listeners (default: random, below the ephemeral range)
#   BENCH_GATEWAY_BIN  the gateway binary to measure (default: the release build made here), e.g. an
#                      earlier commit's, for before/after figures
#   BENCH_NO_INSTALL   1 = never call apt-get (fail if wrk/nginx/curl/redis-server are missing)
#
# Results: the table is printed and written to target/bench/results.txt, every measured run to
# target/bench/runs.tsv. Exits non-zero when a target could not be started, answered more than 1 %
# non-2xx, did not refuse a keyless request, left out a security header, lost access-log lines,
# or (Redis) did not take exactly one round trip per allowed request or failed more than 0.1 % of
# its calls. Missing a performance goal
# is reported, not a failure: the machine is shared and noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/gateway-setup.sh
. scripts/bench/gateway-setup.sh

DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
ROUNDS=${BENCH_ROUNDS:-3}
SCENARIOS=${BENCH_SCENARIOS:-fast slow models}
WITH_REDIS=${BENCH_REDIS:-1}
WITH_FLOOR=${BENCH_FLOOR:-1}
WITH_EXTRAS=${BENCH_EXTRAS:-1}
THREADS=${BENCH_THREADS:-2}
REDIS_TIMEOUT_MS=${BENCH_REDIS_TIMEOUT_MS:-50}
REDIS_LAYOUT=${BENCH_REDIS_LAYOUT:-counters}
READY_DEADLINE_SECS=30
RESULTS_DIR=$ROOT/target/bench
RESULTS=$RESULTS_DIR/results.txt
RUNS=$RESULTS_DIR/runs.tsv
CORS_ORIGIN=https://app.bench.example

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'bench: error: %s\n' "$*" >&2
  exit 1
}

[[ $ROUNDS =~ ^[0-9]+$ ]] || die "BENCH_ROUNDS must be a whole number (0: only the memory figures), got '$ROUNDS'"
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "BENCH_THREADS must be a positive integer, got '$THREADS'"
[[ $WITH_REDIS == 0 || $WITH_REDIS == 1 ]] || die "BENCH_REDIS must be 0 or 1, got '$WITH_REDIS'"
[[ $WITH_FLOOR == 0 || $WITH_FLOOR == 1 ]] || die "BENCH_FLOOR must be 0 or 1, got '$WITH_FLOOR'"
[[ $WITH_EXTRAS == 0 || $WITH_EXTRAS == 1 ]] || die "BENCH_EXTRAS must be 0 or 1, got '$WITH_EXTRAS'"
[[ $REDIS_TIMEOUT_MS =~ ^[1-9][0-9]*$ ]] || die "BENCH_REDIS_TIMEOUT_MS must be a positive integer, got '$REDIS_TIMEOUT_MS'"
for s in $SCENARIOS; do
  [[ $s == fast || $s == slow || $s == models ]] || die "BENCH_SCENARIOS: unknown scenario '$s' (fast, slow, models)"
done

# wrk duration ("10", "10s", "2m") -> whole seconds, for the outer `timeout` bound.
duration_secs() {
  local d=$1
  case $d in
    *[0-9]s | *[0-9]) d=${d%s} ;;
    *[0-9]m) d=$((${d%m} * 60)) ;;
    *) return 1 ;;
  esac
  [[ $d =~ ^[0-9]+$ ]] || return 1
  echo "$d"
}
DURATION_SECS=$(duration_secs "$DURATION") || die "BENCH_DURATION must look like 10s, 10 or 1m, got '$DURATION'"
((DURATION_SECS >= 1)) || die "BENCH_DURATION must be at least 1s"
if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
  WARMUP_SECS=$(duration_secs "$WARMUP") || die "BENCH_WARMUP must look like 2s or 0, got '$WARMUP'"
else
  WARMUP_SECS=0
fi

# ---------------------------------------------------------------------------------------------
# 1. Tools: wrk, nginx, curl, redis-server + redis-cli (installed with apt-get when missing).

find_nginx() {
  local p
  for p in "$(command -v nginx 2>/dev/null || true)" /usr/sbin/nginx /usr/local/sbin/nginx /usr/local/nginx/sbin/nginx; do
    if [[ -n $p && -x $p ]]; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

apt_candidate() { # prints the candidate version of a package, or nothing
  apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }'
}

POLICY_RC_CREATED=0
restore_policy_rc() {
  if ((POLICY_RC_CREATED)); then
    rm -f /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=0
  fi
}

install_tools() {
  local missing=() pkgs=() sudo=()
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  find_nginx >/dev/null || missing+=(nginx)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  if ((WITH_REDIS)); then
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-cli)
  fi
  ((${#missing[@]})) || return 0

  if [[ ${BENCH_NO_INSTALL:-0} == 1 ]]; then
    die "missing tools: ${missing[*]} (BENCH_NO_INSTALL=1, so not installing; apt-get install wrk nginx-light curl redis-server, or BENCH_REDIS=0)"
  fi
  command -v apt-get >/dev/null 2>&1 ||
    die "missing tools: ${missing[*]}, and apt-get is not available to install them; install wrk, nginx, curl and redis-server by hand"
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      die "missing tools: ${missing[*]}; installing them needs root (run as root, or: sudo apt-get install wrk nginx-light curl redis-server)"
    fi
  fi

  log "installing missing tools (${missing[*]}) with apt-get"
  "${sudo[@]}" apt-get update -qq || die "apt-get update failed; cannot install ${missing[*]}"
  local m
  for m in "${missing[@]}"; do
    case $m in
      nginx)
        # nginx-light (Debian <= 12) is the smallest flavour; newer releases only ship "nginx".
        if [[ -n $(apt_candidate nginx-light) ]]; then
          pkgs+=(nginx-light)
        elif [[ -n $(apt_candidate nginx) ]]; then
          pkgs+=(nginx)
        else
          die "no nginx package (nginx-light or nginx) is available from apt"
        fi
        ;;
      redis-server | redis-cli)
        # redis-cli is in redis-tools (a dependency of redis-server).
        local pkg=redis-server
        [[ $m == redis-cli ]] && pkg=redis-tools
        [[ -n $(apt_candidate "$pkg") ]] ||
          die "package '$pkg' is not available from apt (BENCH_REDIS=0 skips the Redis runs)"
        pkgs+=("$pkg")
        ;;
      *)
        [[ -n $(apt_candidate "$m") ]] || die "package '$m' is not available from apt"
        pkgs+=("$m")
        ;;
    esac
  done
  # Keep the nginx and redis-server packages from starting their system-wide services (ports 80
  # and 6379) during installation.
  if [[ ! -e /usr/sbin/policy-rc.d && $(id -u) -eq 0 ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=1
  fi
  log "apt-get install ${pkgs[*]}"
  local apt_log
  apt_log=$(mktemp "${TMPDIR:-/tmp}/infergate-bench-apt.XXXXXX")
  if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${pkgs[@]}" >"$apt_log" 2>&1; then
    restore_policy_rc
    tail -n 40 "$apt_log" >&2
    rm -f "$apt_log"
    die "apt-get install ${pkgs[*]} failed"
  fi
  rm -f "$apt_log"
  restore_policy_rc
  INSTALLED_PKGS=("${pkgs[@]}")
}

INSTALLED_PKGS=()
trap restore_policy_rc EXIT
install_tools
trap - EXIT
command -v wrk >/dev/null 2>&1 || die "wrk is still missing after installation"
command -v curl >/dev/null 2>&1 || die "curl is still missing after installation"
command -v python3 >/dev/null 2>&1 || die "python3 is still missing after installation"
NGINX=$(find_nginx) || die "nginx is still missing after installation"
if ((WITH_REDIS)); then
  command -v redis-server >/dev/null 2>&1 || die "redis-server is still missing after installation"
  command -v redis-cli >/dev/null 2>&1 || die "redis-cli is still missing after installation"
fi

# ---------------------------------------------------------------------------------------------
# 2. Build (release, one feature set for every binary).

log "cargo build --release (gateway, dev upstream, the limiter's million_clients example)"
cargo build --release -p infergate-gateway -p infergate-dev-upstream --bins
cargo build --release -p infergate-ratelimit --example million_clients
cargo build --release -p infergate-gateway --example floor
GATEWAY_BIN=${BENCH_GATEWAY_BIN:-$ROOT/target/release/infergate-gateway}
FLOOR_BIN=$ROOT/target/release/examples/floor
UPSTREAM_BIN=$ROOT/target/release/infergate-dev-upstream
MILLION_BIN=$ROOT/target/release/examples/million_clients
[[ -x $GATEWAY_BIN && -x $UPSTREAM_BIN && -x $MILLION_BIN && -x $FLOOR_BIN ]] || die "release binaries not found under target/release"

# ---------------------------------------------------------------------------------------------
# Process management: everything started here is killed on exit, success or failure.

TMP=$(mktemp -d "${TMPDIR:-/tmp}/infergate-bench.XXXXXX")
PIDS=()

stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do # up to 10 s to drain, then SIGKILL
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do
    stop_pid "$pid"
  done
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if taskset -c 0 true 2>/dev/null && taskset -c 1 true 2>/dev/null; then
  PIN_LOAD=(taskset -c 0)
  PIN_PROXY=(taskset -c 1)
  PINNING="proxy under test alone on CPU 1; wrk, the upstream and redis-server on CPU 0"
else
  PIN_LOAD=()
  PIN_PROXY=()
  PINNING="NOT pinned (CPUs 0 and 1 are not both available to this process)"
  log "warning: cannot pin to CPUs 0 and 1; running unpinned, numbers are less comparable"
fi

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Below the kernel's ephemeral range, so no client socket of a previous run can hold a port picked
# for a listener.
EPHEMERAL_LOW=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
NEXT_PORT=${BENCH_PORT_BASE:-$((10000 + RANDOM % (EPHEMERAL_LOW - 12000)))}
pick_port() { # sets PICKED_PORT (not echoed: a subshell would lose NEXT_PORT)
  local tries
  for ((tries = 0; tries < 500; tries++)); do
    PICKED_PORT=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1))
    port_in_use "$PICKED_PORT" || return 0
  done
  die "no free port found near $NEXT_PORT"
}

# wait_ready NAME PID URL LOGFILE: poll URL until it answers 2xx, the process dies, or the deadline.
wait_ready() {
  local name=$1 pid=$2 url=$3 logfile=$4 deadline=$((SECONDS + READY_DEADLINE_SECS))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      printf '%s exited during startup; last log lines:\n' "$name" >&2
      tail -n 30 "$logfile" >&2 || true
      die "$name did not start"
    fi
    if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  printf '%s not ready after %ss; last log lines:\n' "$name" "$READY_DEADLINE_SECS" >&2
  tail -n 30 "$logfile" >&2 || true
  die "$name did not become ready at $url"
}

# ---------------------------------------------------------------------------------------------
# /proc readings: CPU time of processes, their resident size, how busy a core was.

CLK_TCK=$(getconf CLK_TCK)
# proc_ticks PID...: "ALL SYS": utime+stime and stime alone (clock ticks), summed over the
# processes (all their threads). The kernel's part is reported apart: on loopback a proxy's sends
# run its peers' receive path and wake-ups, which no user-space change removes.
proc_ticks() {
  local t=0 s=0 p v
  for p in "$@"; do
    # After "pid (comm) " the fields start at state (3); utime and stime are fields 14 and 15.
    v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13, $13 }' "/proc/$p/stat" 2>/dev/null) || continue
    t=$((t + ${v% *}))
    s=$((s + ${v#* }))
  done
  echo "$t $s"
}
# proc_kib FIELD PID...: VmRSS or VmHWM (KiB) summed over the processes.
proc_kib() {
  local field=$1 t=0 p v
  shift
  for p in "$@"; do
    v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
# cpu_stat N: "TOTAL IDLE" jiffies of CPU N.
cpu_stat() { awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6 }' /proc/stat; }
busy_pct() { # "T0 I0" "T1 I1" -> percent busy between the two readings
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); dt = y[1] - x[1]; di = y[2] - x[2];
    if (dt > 0) printf "%.0f", 100 * (1 - di / dt); else print "?" }'
}

# ---------------------------------------------------------------------------------------------
# 3. What runs: upstreams, redis, nginx, gateways.

rand_hex() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }
USER_KEY="igk_bench_user_$(rand_hex)"
# An admin key for reading /metrics (limiter fallbacks, backend errors, refusals) between runs and
# for the streamed download (files are not a user key's routes).
ADMIN_KEY="igk_bench_admin_$(rand_hex)"

USER_DIRECTIVE="# (not root: nginx runs as the current user)"
if [[ $(id -u) -eq 0 ]]; then
  # As root nginx would switch its worker to "nobody", which cannot enter the private temp dir.
  USER_DIRECTIVE="user $(id -un) $(id -gn);"
fi

# render_nginx TEMPLATE OUT PORT UPSTREAM_PORT: fills in a template and checks the result.
render_nginx() {
  local template=$1 out=$2 port=$3 upstream_port=$4
  mkdir -p "$TMP/nginx-tmp" "$TMP/stub-tmp"
  sed -e "s|@TMP@|$TMP|g" -e "s|@PORT@|$port|g" -e "s|@UPSTREAM_PORT@|$upstream_port|g" \
    -e "s|@API_KEY@|$USER_KEY|g" -e "s|@CORS_ORIGIN@|$CORS_ORIGIN|g" \
    -e "s|@USER_DIRECTIVE@|$USER_DIRECTIVE|g" "$template" >"$out"
  "$NGINX" -t -q -p "$TMP" -e "$TMP/nginx-error.log" -c "$out" >"$TMP/nginx-t.log" 2>&1 || {
    cat "$TMP/nginx-t.log" >&2
    die "generated nginx config $out is invalid"
  }
}

# The upstreams live for the whole run: the stub (fast), the dev upstream with 50 ms (slow) and
# without latency (models).
declare -A UPSTREAM_PORT_OF
start_upstreams() {
  local s need_stub=0 need_slow=0 need_models=0
  for s in $SCENARIOS; do
    case $s in fast) need_stub=1 ;; slow) need_slow=1 ;; models) need_models=1 ;; esac
  done
  ((WITH_EXTRAS)) && need_stub=1 && need_models=1
  if ((need_stub)); then
    pick_port
    UPSTREAM_PORT_OF[fast]=$PICKED_PORT
    head -c 1048576 /dev/urandom >"$TMP/1mib.bin"
    render_nginx "$ROOT/scripts/bench/nginx-stub.conf.template" "$TMP/stub.conf" "$PICKED_PORT" 0
    log "starting the nginx stub upstream on 127.0.0.1:$PICKED_PORT (${PIN_LOAD[*]:-unpinned})"
    "${PIN_LOAD[@]}" "$NGINX" -p "$TMP" -e "$TMP/stub-error.log" -c "$TMP/stub.conf" -g 'daemon off;' \
      >"$TMP/stub.log" 2>&1 &
    PIDS+=("$!")
    wait_ready "nginx stub" "$!" "http://127.0.0.1:$PICKED_PORT/health" "$TMP/stub-error.log"
  fi
  local name latency
  for name in slow models; do
    case $name in slow) ((need_slow)) || continue; latency=50 ;; models) ((need_models)) || continue; latency=0 ;; esac
    pick_port
    UPSTREAM_PORT_OF[$name]=$PICKED_PORT
    log "starting the dev upstream ($name, --latency-ms $latency) on 127.0.0.1:$PICKED_PORT (${PIN_LOAD[*]:-unpinned})"
    RUST_LOG=warn "${PIN_LOAD[@]}" "$UPSTREAM_BIN" --listen "127.0.0.1:$PICKED_PORT" --workers 1 \
      --latency-ms "$latency" --token-delay-ms 0 >"$TMP/upstream-$name.log" 2>&1 &
    PIDS+=("$!")
    wait_ready "dev upstream ($name)" "$!" "http://127.0.0.1:$PICKED_PORT/health" "$TMP/upstream-$name.log"
  done
}

REDIS_PID=
REDIS_PORT=
start_redis() {
  pick_port
  REDIS_PORT=$PICKED_PORT
  mkdir -p "$TMP/redis"
  log "starting redis-server on 127.0.0.1:$REDIS_PORT (${PIN_LOAD[*]:-unpinned}, no persistence)"
  "${PIN_LOAD[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$TMP/redis" \
    --save "" --appendonly no --daemonize no --protected-mode yes --loglevel warning \
    >"$TMP/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  local deadline=$((SECONDS + READY_DEADLINE_SECS))
  while ((SECONDS < deadline)); do
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited during startup: $(tail -n 5 "$TMP/redis.log")"
    [[ $(timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && return 0
    sleep 0.1
  done
  die "redis-server did not answer PING on 127.0.0.1:$REDIS_PORT within ${READY_DEADLINE_SECS}s"
}

# The proxy under test: PROXY_PIDS are the processes whose CPU and memory are measured.
PROXY_PIDS=()
PROXY_PORT=
PROXY_NAME=
PROXY_LOG=

start_nginx() { # UPSTREAM_PORT
  pick_port
  PROXY_PORT=$PICKED_PORT
  PROXY_NAME=nginx
  render_nginx "$ROOT/scripts/bench/nginx-gateway.conf.template" "$TMP/nginx.conf" "$PROXY_PORT" "$1"
  : >"$TMP/nginx-access.log"
  "${PIN_PROXY[@]}" "$NGINX" -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" \
    -g 'daemon off;' >>"$TMP/nginx.log" 2>&1 &
  local master=$!
  PIDS+=("$master")
  wait_ready "nginx" "$master" "http://127.0.0.1:$PROXY_PORT/health" "$TMP/nginx-error.log"
  PROXY_PIDS=("$master" $(pgrep -P "$master" || true))
  PROXY_LOG=$TMP/nginx-access.log
}

# start_floor UPSTREAM_PORT: the gateway's parts without its policies (examples/floor.rs).
start_floor() {
  pick_port
  PROXY_PORT=$PICKED_PORT
  PROXY_NAME=floor
  "${PIN_PROXY[@]}" "$FLOOR_BIN" "127.0.0.1:$PROXY_PORT" "http://127.0.0.1:$1" >"$TMP/floor.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_ready "floor" "$pid" "http://127.0.0.1:$PROXY_PORT/health" "$TMP/floor.log"
  PROXY_PIDS=("$pid")
  PROXY_LOG=
}

# start_gateway NAME UPSTREAM_PORT [VAR=VALUE ...]: one gateway with every policy on, plus the
# given environment (the limiter backend, a tighter limit), which overrides the common settings.
start_gateway() {
  local name=$1 upstream_port=$2
  shift 2
  pick_port
  PROXY_PORT=$PICKED_PORT
  PROXY_NAME=$name
  local dir=$TMP/gateway-$name
  mkdir -p "$dir"
  gateway_setup "$dir" "$PROXY_PORT" "$upstream_port" "$USER_KEY:user,$ADMIN_KEY:admin" "$CORS_ORIGIN"
  # GATEWAY_EXTRA_YAML: more settings under rate_limit (a token budget, for the streamed figure).
  printf '%s' "${GATEWAY_EXTRA_YAML:-}" >>"$dir/gateway.yaml"
  PROXY_LOG=$dir/gateway.log
  # A clean environment and a temp working directory (scripts/bench/gateway-setup.sh).
  (
    cd "$dir"
    exec env -i "${GATEWAY_ENV[@]}" \
      RATE_LIMIT_REDIS_TIMEOUT_MS="$REDIS_TIMEOUT_MS" \
      "$@" \
      "${PIN_PROXY[@]}" "$GATEWAY_BIN" --config "$dir/gateway.yaml"
  ) >"$PROXY_LOG" 2>&1 &
  PROXY_PIDS=("$!")
  PIDS+=("$!")
  wait_ready "infergate gateway '$name'" "$!" "http://127.0.0.1:$PROXY_PORT/health" "$PROXY_LOG"
}

# stop_proxy: stops the proxy under test (SIGTERM: a clean shutdown flushes the access log) and
# sets LOG_LINES to the access-log lines it wrote.
LOG_LINES=0
stop_proxy() {
  stop_pid "${PROXY_PIDS[0]}"
  if [[ $PROXY_NAME == nginx ]]; then
    LOG_LINES=$(wc -l <"$PROXY_LOG")
  else
    LOG_LINES=$(grep -c '"message":"request"' "$PROXY_LOG" || true)
    local other first
    other=$(awk '!/"message":"(request|rate limit exceeded)"/ && /"level":"(WARN|ERROR)"/ { n++ } END { print n + 0 }' "$PROXY_LOG")
    if ((other > 0)); then
      first=$(awk '!/"message":"(request|rate limit exceeded)"/ && /"level":"(WARN|ERROR)"/ { print substr($0, 1, 300); exit }' "$PROXY_LOG")
      NOTES+=("gateway '$PROXY_NAME' logged $other warning/error line(s); first: $first")
    fi
  fi
}

# Limiter counters from the running gateway's /metrics (admin key): "FALLBACKS BACKEND_ERRORS
# REJECTIONS CALLS" (CALLS: Redis round trips, the scrape's own included), or "? ? ? ?" when
# /metrics cannot be read.
limiter_counters() {
  local body
  body=$(curl -fsS --max-time 5 -H "X-API-Key: $ADMIN_KEY" "http://127.0.0.1:$PROXY_PORT/metrics" 2>/dev/null) || {
    echo "? ? ? ?"
    return 0
  }
  awk '
    $1 ~ /^infergate_ratelimit_fallback_decisions_total/ { f += $2 }
    $1 ~ /^infergate_ratelimit_backend_errors_total/ { e += $2 }
    $1 ~ /^infergate_ratelimit_rejections_total/ { r += $2 }
    $1 ~ /^infergate_ratelimit_backend_calls_total/ { c += $2 }
    END { printf "%d %d %d %d\n", f, e, r, c }' <<<"$body"
}

# The bench's redis-server: "COMMANDS TICKS", the commands it has run (INFO's own left out) and
# its CPU in clock ticks, or "? ?" when it cannot be read.
redis_counters() {
  local cmds ticks
  cmds=$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info commandstats 2>/dev/null |
    awk -F'[:=,]' '/^cmdstat_/ && $1 != "cmdstat_info" { c += $3 } END { print c + 0 }') || cmds="?"
  ticks=$(proc_ticks "$REDIS_PID")
  echo "${cmds:-?} ${ticks% *}"
}

# ---------------------------------------------------------------------------------------------
# 4. Measuring.

SECURITY_HEADERS=(x-content-type-options x-frame-options x-xss-protection strict-transport-security
  referrer-policy permissions-policy content-security-policy)
FAILURES=()
NOTES=()

# Per scenario: the request (wrk script or path) and the connections.
scenario_conns() { case $1 in fast) echo 64 ;; slow) echo 256 ;; models) echo 32 ;; esac }
scenario_path() { case $1 in fast | slow) echo /v1/chat/completions ;; models) echo /v1/models ;; esac }
scenario_request() { case $1 in fast | slow) echo "POST /v1/chat/completions" ;; models) echo "GET /v1/models" ;; esac }
CHAT_BODY='{"model": "dev-model", "messages": [{"role": "user", "content": "hello from wrk, the infergate load test"}], "max_tokens": 16}'

one_request() { # SCENARIO BASE [KEY]: prints the HTTP status (000 when nothing answered)
  local key=${3:-$USER_KEY}
  if [[ $(scenario_path "$1") == /v1/chat/completions ]]; then
    curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "X-API-Key: $key" -H "Origin: $CORS_ORIGIN" \
      -H 'Content-Type: application/json' --data "$CHAT_BODY" "$2/v1/chat/completions" || true
  else
    curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "X-API-Key: $key" "$2$(scenario_path "$1")" || true
  fi
}

# check_proxy NAME BASE: refuses a keyless request, sets every security header and CORS, answers
# a preflight; once per proxy and round, outside the measured run.
check_proxy() {
  local name=$1 base=$2 code headers h missing=()
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$base/v1/models" || true)
  [[ $code == 401 ]] || FAILURES+=("$name: GET /v1/models without a key answered HTTP $code, expected 401")
  headers=$(curl -sS -D - -o /dev/null --max-time 5 -H "X-API-Key: $USER_KEY" -H "Origin: $CORS_ORIGIN" \
    "$base/v1/models" | tr -d '\r' || true)
  for h in "${SECURITY_HEADERS[@]}" access-control-allow-origin; do
    grep -qi "^$h:" <<<"$headers" || missing+=("$h")
  done
  ((${#missing[@]} == 0)) || FAILURES+=("$name: headers missing from GET /v1/models: ${missing[*]}")
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -X OPTIONS -H "Origin: $CORS_ORIGIN" \
    -H 'Access-Control-Request-Method: POST' -H 'Access-Control-Request-Headers: content-type, x-api-key' \
    "$base/v1/chat/completions" || true)
  [[ $code == 200 || $code == 204 ]] || FAILURES+=("$name: a CORS preflight from the allowed origin answered HTTP $code")
}

# Latency as wrk prints it (850.00us, 1.23ms, 2.00s) -> milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    else if (u != "ms") { print "?"; exit }
    printf "%.2f", n
  }'
}

mkdir -p "$RESULTS_DIR"
printf 'round\tscenario\ttarget\trps\tp50_ms\tp99_ms\trequests\tnon2xx\tcpu_us_per_req\trss_kib\tload_core_busy\tproxy_core_busy\tredis_calls\tsys_us_per_req\tredis_cmds\tredis_us_per_req\tlog_lines\n' >"$RUNS"

# run_wrk ROUND SCENARIO TARGET BASE [MODE]: one measured run (after a warm-up), one TSV row.
#   MODE allowed (default): at most 1 % non-2xx. denied: the key is spent, at least 99 % 429s.
REDIS_BACKED=0
LAST_REQUESTS=0
run_wrk() {
  local round=$1 scenario=$2 target=$3 base=$4 mode=${5:-allowed}
  local conns path url out
  conns=$(scenario_conns "$scenario")
  path=$(scenario_path "$scenario")
  url=$base$path
  local -a args=(-t"$THREADS" -c"$conns" --latency --timeout 5s -H "X-API-Key: $USER_KEY")
  [[ $path == /v1/chat/completions ]] && args+=(-s "$ROOT/scripts/bench/chat.lua")
  ((THREADS <= conns)) || args[0]=-t1

  local code expect=200
  [[ $mode == denied ]] && expect=429
  code=$(one_request "$scenario" "$base")
  if [[ $code != "$expect" ]]; then
    FAILURES+=("$target ($scenario): a single request answered HTTP $code before the load test, expected $expect")
    return 0
  fi
  if ((WARMUP_SECS > 0)); then
    timeout --foreground $((WARMUP_SECS + 30)) "${PIN_LOAD[@]}" wrk "${args[@]}" -d"${WARMUP_SECS}s" "$url" >/dev/null ||
      die "wrk warm-up against $target failed or hung"
  fi

  local calls0=0 calls1=0 lim0="" lim1="" rd0="? 0" rd1="? 0" ticks0="0 0" ticks1="0 0" c0a c0b c1a c1b
  if ((REDIS_BACKED)); then
    sleep 0.3 # the warm-up's last requests reach Redis before counting starts
    lim0=$(limiter_counters)
    rd0=$(redis_counters)
  fi
  ((${#PROXY_PIDS[@]})) && ticks0=$(proc_ticks "${PROXY_PIDS[@]}")
  c0a=$(cpu_stat 0)
  c1a=$(cpu_stat 1)
  log "round $round, $scenario, $target: wrk -t${args[0]#-t} -c$conns -d${DURATION_SECS}s $url"
  out=$(timeout --foreground $((DURATION_SECS + 30)) "${PIN_LOAD[@]}" wrk "${args[@]}" -d"${DURATION_SECS}s" "$url") ||
    die "wrk against $target failed or hung"
  c0b=$(cpu_stat 0)
  c1b=$(cpu_stat 1)
  ((${#PROXY_PIDS[@]})) && ticks1=$(proc_ticks "${PROXY_PIDS[@]}")
  if ((REDIS_BACKED)); then
    sleep 0.3 # requests in flight when wrk stopped reach Redis too
    lim1=$(limiter_counters)
    rd1=$(redis_counters)
  fi
  printf '%s\n' "$out" >"$TMP/wrk-$round-$scenario-$target.txt"

  local rps p50 p99 total non2xx errors
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  total=$(awk '/ requests in / { print $1 }' <<<"$out")
  non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' <<<"$out")
  errors=$(awk '/Socket errors:/ { sub(/^ *Socket errors: */, ""); print }' <<<"$out")
  [[ -n $rps && -n $total ]] || die "could not parse wrk output for $target: $out"
  non2xx=${non2xx:-0}
  LAST_REQUESTS=$total
  [[ -n $errors ]] && NOTES+=("round $round, $scenario, $target: wrk socket errors: $errors")

  local cpu_us=- sys_us=- rss=- calls=- redis_cmds=- redis_us=-
  if ((${#PROXY_PIDS[@]})) && ((total > 0)); then
    cpu_us=$(awk -v t=$((${ticks1% *} - ${ticks0% *})) -v hz="$CLK_TCK" -v n="$total" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    sys_us=$(awk -v t=$((${ticks1#* } - ${ticks0#* })) -v hz="$CLK_TCK" -v n="$total" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    rss=$(proc_kib VmRSS "${PROXY_PIDS[@]}")
  fi
  if ((REDIS_BACKED)); then
    local fb0 er0 rj0 fb1 er1 rj1
    read -r fb0 er0 rj0 calls0 <<<"$lim0"
    read -r fb1 er1 rj1 calls1 <<<"$lim1"
    [[ $calls0 == "?" || $calls1 == "?" ]] && calls0=0 calls1=0
    calls=$((calls1 - calls0))
    # What redis-server spends on the run: its commands and CPU a request (it runs on the load
    # core, and every replica of a fleet shares it).
    if [[ ${rd0% *} != "?" && ${rd1% *} != "?" ]] && ((total > 0)); then
      redis_cmds=$(awk -v c=$((${rd1% *} - ${rd0% *})) -v n="$total" 'BEGIN { printf "%.2f", c / n }')
      redis_us=$(awk -v t=$((${rd1#* } - ${rd0#* })) -v hz="$CLK_TCK" -v n="$total" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    fi
    if [[ $mode == denied ]]; then
      ((total > 0 && calls * 100 > total)) &&
        FAILURES+=("$target: $calls Redis round trips for $total refused requests (the local deny cache should answer them)")
    # Up to one more a connection (a request in flight when wrk stopped reaches Redis but is not
    # in wrk's count) and one for the /metrics scrape that read the count.
    elif ((calls < total || calls > total + conns + 1)); then
      FAILURES+=("round $round, $scenario, $target: $calls Redis round trips for $total requests; expected exactly 1 per request")
    fi
    if [[ $fb0 == "?" || $fb1 == "?" ]]; then
      FAILURES+=("$target ($scenario): could not read the gateway's /metrics to check for limiter fallbacks")
    elif (((er1 - er0 + fb1 - fb0) * 1000 > total)); then
      FAILURES+=("round $round, $scenario, $target: the Redis limiter failed during the run ($((er1 - er0)) backend errors, $((fb1 - fb0)) fallback decisions for $total requests)")
    elif ((er1 > er0 || fb1 > fb0)); then
      # A few timeouts (RATE_LIMIT_REDIS_TIMEOUT_MS) when redis-server shares a saturated core.
      NOTES+=("round $round, $scenario, $target: $((er1 - er0)) Redis backend errors, $((fb1 - fb0)) fallback decisions for $total requests (under 0.1 %)")
    elif [[ $mode != denied ]] && ((rj1 > rj0)); then
      FAILURES+=("round $round, $scenario, $target: $((rj1 - rj0)) requests refused by the limiter; limits should be high enough for none")
    fi
  fi
  if [[ $mode == denied ]]; then
    ((total > 0 && non2xx * 100 >= total * 99)) ||
      FAILURES+=("$target: only $non2xx of $total responses were refused; expected at least 99 %")
  elif ((total == 0 || non2xx * 100 > total)); then
    FAILURES+=("round $round, $scenario, $target: $non2xx of $total responses were not 2xx (more than 1 %)")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t-\n' "$round" "$scenario" "$target" "$rps" \
    "$p50" "$p99" "$total" "$non2xx" "$cpu_us" "$rss" "$(busy_pct "$c0a" "$c0b")" "$(busy_pct "$c1a" "$c1b")" \
    "$calls" "$sys_us" "$redis_cmds" "$redis_us" >>"$RUNS"
}

# The log check: every request wrk completed (plus the few the checks sent) has its line, written
# by the time the proxy exited. Lines for requests wrk abandoned at the end may add a few more.
check_log_lines() { # TARGET REQUESTS_SEEN
  if ((LOG_LINES < $2)); then
    FAILURES+=("$1: $LOG_LINES access-log lines for at least $2 requests (lines lost)")
  fi
}

# ---------------------------------------------------------------------------------------------
# 5. The rounds.

start_upstreams
REDIS_ENV=()
if ((WITH_REDIS)); then
  start_redis
  REDIS_VERSION=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
  REDIS_ENV=(RATE_LIMIT_STORAGE=redis "RATE_LIMIT_REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
    "RATE_LIMIT_REDIS_LAYOUT=$REDIS_LAYOUT")
fi
TARGETS=(direct nginx)
((WITH_FLOOR)) && TARGETS+=(floor)
TARGETS+=(infergate)
((WITH_REDIS)) && TARGETS+=(infergate-redis)

for ((round = 1; round <= ROUNDS; round++)); do
  for scenario in $SCENARIOS; do
    up=${UPSTREAM_PORT_OF[$scenario]}
    for target in "${TARGETS[@]}"; do
      case $target in
        direct)
          PROXY_PIDS=()
          run_wrk "$round" "$scenario" direct "http://127.0.0.1:$up"
          continue
          ;;
        nginx) start_nginx "$up" ;;
        floor)
          # No checks to verify and no access log: measured, then stopped.
          start_floor "$up"
          run_wrk "$round" "$scenario" floor "http://127.0.0.1:$PROXY_PORT"
          stop_pid "${PROXY_PIDS[0]}"
          continue
          ;;
        infergate) start_gateway infergate "$up" RATE_LIMIT_STORAGE=memory ;;
        infergate-redis) start_gateway infergate-redis "$up" "${REDIS_ENV[@]}" ;;
      esac
      base="http://127.0.0.1:$PROXY_PORT"
      check_proxy "$target" "$base"
      REDIS_BACKED=0
      [[ $target == infergate-redis ]] && REDIS_BACKED=1
      run_wrk "$round" "$scenario" "$target" "$base"
      REDIS_BACKED=0
      stop_proxy
      check_log_lines "$target ($scenario, round $round)" "$LAST_REQUESTS"
      # The log-line count goes into the row just written.
      sed -i '$ s/\t-$/\t'"$LOG_LINES"'/' "$RUNS"
    done
  done
done

# ---------------------------------------------------------------------------------------------
# 6. Once: memory figures and the denied path.

EXTRAS=()
if ((WITH_EXTRAS)); then
  up=${UPSTREAM_PORT_OF[fast]}
  start_gateway infergate-memory "$up" RATE_LIMIT_STORAGE=memory
  base="http://127.0.0.1:$PROXY_PORT"
  one_request fast "$base" >/dev/null
  idle_kib=$(proc_kib VmRSS "${PROXY_PIDS[0]}")
  EXTRAS+=("idle_rss_kib=$idle_kib")
  # 32 clients at once, each streaming a 1 MiB response through the gateway.
  seq 32 | xargs -P 32 -I{} curl -sS -o "$TMP/download-{}.bin" --max-time 30 -H "X-API-Key: $ADMIN_KEY" \
    "$base/v1/files/bench-1mib/content" || FAILURES+=("streamed download through the gateway failed")
  bad=0
  for f in "$TMP"/download-*.bin; do cmp -s "$f" "$TMP/1mib.bin" || bad=$((bad + 1)); done
  ((bad == 0)) || FAILURES+=("$bad of 32 streamed 1 MiB downloads did not arrive intact")
  hwm_kib=$(proc_kib VmHWM "${PROXY_PIDS[0]}")
  EXTRAS+=("stream_peak_growth_kib=$((hwm_kib - idle_kib))")
  rm -f "$TMP"/download-*.bin
  stop_proxy

  # Token limiting on a streamed route: the same streamed chat calls through a gateway without
  # budgets and through one whose user role has a token budget and a concurrency cap (so every
  # call is estimated, reserved, metered chunk by chunk and settled).
  stream_figure() { # NAME → "rps p99_ms cpu_us_per_req"
    local base=http://127.0.0.1:$PROXY_PORT out ticks0 ticks1 total
    local -a args=(-t1 -c32 --latency --timeout 5s -H "X-API-Key: $USER_KEY" -s "$ROOT/scripts/bench/chat-stream.lua")
    timeout --foreground $((WARMUP_SECS + 30)) "${PIN_LOAD[@]}" wrk "${args[@]}" -d"${WARMUP_SECS}s" \
      "$base/v1/chat/completions" >/dev/null || die "wrk warm-up ($1) failed"
    ticks0=$(proc_ticks "${PROXY_PIDS[@]}")
    out=$(timeout --foreground $((DURATION_SECS + 30)) "${PIN_LOAD[@]}" wrk "${args[@]}" -d"${DURATION_SECS}s" \
      "$base/v1/chat/completions") || die "wrk ($1) failed"
    ticks1=$(proc_ticks "${PROXY_PIDS[@]}")
    total=$(awk '/ requests in / { print $1 }' <<<"$out")
    grep -q 'Non-2xx' <<<"$out" && FAILURES+=("streamed chat ($1): $(grep 'Non-2xx' <<<"$out")")
    printf '%s %s %s\n' "$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")" \
      "$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")" \
      "$(awk -v t=$((${ticks1% *} - ${ticks0% *})) -v hz="$CLK_TCK" -v n="$total" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')"
  }
  models_up=${UPSTREAM_PORT_OF[models]}
  start_gateway infergate-stream "$models_up" RATE_LIMIT_STORAGE=memory
  read -r p_rps p_p99 p_cpu <<<"$(stream_figure plain)"
  stop_proxy
  GATEWAY_EXTRA_YAML=$'  roles:\n    user: {tokens_per_minute: 1000000000000, max_concurrent: 100000}\n' \
    start_gateway infergate-tokens "$models_up" RATE_LIMIT_STORAGE=memory
  read -r t_rps t_p99 t_cpu <<<"$(stream_figure tokens)"
  stop_proxy
  EXTRAS+=("stream_plain_rps=$p_rps stream_plain_p99_ms=$p_p99 stream_plain_cpu_us=$p_cpu stream_tokens_rps=$t_rps stream_tokens_p99_ms=$t_p99 stream_tokens_cpu_us=$t_cpu")

  log "the memory limiter with one million tracked clients"
  million=$("$MILLION_BIN") || die "million_clients failed"
  EXTRAS+=("$million")

  if ((WITH_REDIS)); then
    DENY_LIMIT=1/hour
    start_gateway infergate-deny "$up" "${REDIS_ENV[@]}" RATE_LIMIT_AUTHENTICATED=$DENY_LIMIT
    base="http://127.0.0.1:$PROXY_PORT"
    code=$(one_request models "$base")
    [[ $code == 200 ]] || FAILURES+=("infergate-deny: the one request $DENY_LIMIT allows answered HTTP $code")
    REDIS_BACKED=1
    run_wrk 1 models infergate-deny "$base" denied
    REDIS_BACKED=0
    stop_proxy
  fi
fi

# ---------------------------------------------------------------------------------------------
# 7. Report.

{
  echo "infergate vs nginx — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "machine: $(nproc) CPUs, $(awk '/model name/ { sub(/^[^:]*: /, ""); print; exit }' /proc/cpuinfo)"
  echo "pinning: $PINNING"
  echo "wrk: $THREADS thread(s), ${DURATION_SECS}s per run after a ${WARMUP_SECS}s warm-up, $ROUNDS round(s)"
  echo "nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), 1 worker process"
  ((WITH_REDIS)) && echo "redis: redis-server $REDIS_VERSION (--save \"\" --appendonly no), ${PIN_LOAD[*]:-unpinned}"
  echo "infergate: INFERGATE_WORKERS=1, every policy on, access log (LOG_FORMAT=json) to a file"
  python3 "$ROOT/scripts/bench/report.py" "$RUNS" "${EXTRAS[@]}"
  if ((${#NOTES[@]})); then
    echo
    printf 'note: %s\n' "${NOTES[@]}"
  fi
  if ((${#FAILURES[@]})); then
    echo
    echo "FAILED:"
    printf '  %s\n' "${FAILURES[@]}"
  fi
} >"$RESULTS"

echo
cat "$RESULTS"
echo
echo "(written to ${RESULTS#"$ROOT"/}; every run in ${RUNS#"$ROOT"/})"
((${#INSTALLED_PKGS[@]})) && echo "(installed with apt-get: ${INSTALLED_PKGS[*]})"
((${#FAILURES[@]} == 0)) || die "${#FAILURES[@]} check(s) failed (see FAILED above)"
