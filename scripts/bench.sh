#!/usr/bin/env bash
# `make bench`: a first load test of the infergate gateway.
#
# Measures, with the same wrk settings, three targets in front of one dev upstream (1 worker):
#   direct     wrk -> dev upstream
#   infergate  wrk -> infergate-gateway (1 worker, auth + rate limiting + security headers) -> upstream
#   nginx      wrk -> nginx (1 worker, API-key map, keep-alive proxy, same headers) -> upstream
# for GET /v1/models (proxied, authenticated, rate-limited) and POST /inference (wrk Lua script).
#
# The gateway is measured with both rate-limit backends (issue 4), all other settings identical:
#   infergate        RATE_LIMIT_STORAGE=memory (the default)
#   infergate-redis  RATE_LIMIT_STORAGE=redis against a private redis-server on a free loopback port
#                    (--save "" --appendonly no, temp dir); limits high, so every request is allowed:
#                    requests/s and p99 side by side with memory, redis/memory (target >= 0.80), and
#                    Redis round trips per request from INFO commandstats (EVALSHA + EVAL calls during
#                    the measured run / requests wrk completed; target exactly 1)
#   infergate-deny   a separate redis-backed instance with RATE_LIMIT_AUTHENTICATED=1/hour: after
#                    the one allowed request, every request is a 429 from the limiter's local deny
#                    cache; a short GET /v1/models run reports requests/s and round trips per
#                    request (target ~0). Its 429s are expected, not counted as failures.
# Both redis-backed instances run with RATE_LIMIT_FAILURE_MODE=closed (the memory one too, where it
# has no effect), so a Redis failure shows up as 503s instead of silently falling back to memory.
#
# CPU pinning (2 cores): the proxy under test on core 1; wrk, the upstream and redis-server on core 0.
#
# Environment knobs:
#   BENCH_DURATION     wrk -d per run (default 10s)
#   BENCH_CONNECTIONS  wrk -c (default 32)
#   BENCH_THREADS      wrk -t (default 1)
#   BENCH_WARMUP       warm-up run before each measurement, same settings (default 1s; 0 = none)
#   BENCH_INFERENCE    1 (default) also measures POST /inference; 0 skips it
#   BENCH_REDIS        1 (default) also measures the Redis rate-limit backend; 0 skips it
#   BENCH_DENY_DURATION  wrk -d of the denied-path run (default: BENCH_DURATION, at most 5s)
#   BENCH_REDIS_TIMEOUT_MS  RATE_LIMIT_REDIS_TIMEOUT_MS for every gateway run (default 50, the
#                      gateway's own default)
#   BENCH_PORT_BASE    first port to try for the listeners (default: random in 20000-39999)
#   BENCH_NO_INSTALL   1 = never call apt-get (fail if wrk/nginx/curl/redis-server are missing)
#
# Results: printed, and written to target/bench/results.txt. Exits non-zero if a target could not be
# started, answered more than 1% non-2xx responses (the denied-path run instead must answer at
# least 99% non-2xx, all of them rate-limit refusals), or a proxy did not refuse a keyless request
# or left out a security header, or the Redis backend did not take exactly one round trip per
# allowed request (plus at most the requests still in flight when wrk stopped), or more than 1% of
# a denied request's round trips, or fell back / failed during a run. A redis/memory ratio below
# 0.80 is reported as below target but does not fail the run (the machine is shared and noisy).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-1}
WARMUP=${BENCH_WARMUP:-1s}
WITH_INFERENCE=${BENCH_INFERENCE:-1}
WITH_REDIS=${BENCH_REDIS:-1}
REDIS_TIMEOUT_MS=${BENCH_REDIS_TIMEOUT_MS:-50}
READY_DEADLINE_SECS=30
RESULTS_DIR=$ROOT/target/bench
RESULTS=$RESULTS_DIR/results.txt

log() { printf '==> %s\n' "$*" >&2; }
die() {
  printf 'bench: error: %s\n' "$*" >&2
  exit 1
}

[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONNECTIONS must be a positive integer, got '$CONNECTIONS'"
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "BENCH_THREADS must be a positive integer, got '$THREADS'"
((THREADS <= CONNECTIONS)) || die "BENCH_THREADS ($THREADS) must not exceed BENCH_CONNECTIONS ($CONNECTIONS)"
[[ $WITH_REDIS == 0 || $WITH_REDIS == 1 ]] || die "BENCH_REDIS must be 0 or 1, got '$WITH_REDIS'"
[[ $REDIS_TIMEOUT_MS =~ ^[1-9][0-9]*$ ]] || die "BENCH_REDIS_TIMEOUT_MS must be a positive integer, got '$REDIS_TIMEOUT_MS'"

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
  WARMUP_SECS=$(duration_secs "$WARMUP") || die "BENCH_WARMUP must look like 1s or 0, got '$WARMUP'"
else
  WARMUP_SECS=0
fi
# The denied-path run is short: BENCH_DURATION, at most 5 s, unless BENCH_DENY_DURATION says otherwise.
if [[ -n ${BENCH_DENY_DURATION:-} ]]; then
  DENY_DURATION_SECS=$(duration_secs "$BENCH_DENY_DURATION") ||
    die "BENCH_DENY_DURATION must look like 5s, 5 or 1m, got '$BENCH_DENY_DURATION'"
  ((DENY_DURATION_SECS >= 1)) || die "BENCH_DENY_DURATION must be at least 1s"
else
  DENY_DURATION_SECS=$((DURATION_SECS < 5 ? DURATION_SECS : 5))
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
NGINX=$(find_nginx) || die "nginx is still missing after installation"
if ((WITH_REDIS)); then
  command -v redis-server >/dev/null 2>&1 || die "redis-server is still missing after installation"
  command -v redis-cli >/dev/null 2>&1 || die "redis-cli is still missing after installation"
fi

# ---------------------------------------------------------------------------------------------
# 2. Build.

log "cargo build --release -p infergate-gateway -p infergate-dev-upstream --bins"
cargo build --release -p infergate-gateway -p infergate-dev-upstream --bins
GATEWAY_BIN=$ROOT/target/release/infergate-gateway
UPSTREAM_BIN=$ROOT/target/release/infergate-dev-upstream
[[ -x $GATEWAY_BIN && -x $UPSTREAM_BIN ]] || die "release binaries not found under target/release"

# ---------------------------------------------------------------------------------------------
# Process management: everything started here is killed on exit, success or failure.

TMP=$(mktemp -d "${TMPDIR:-/tmp}/infergate-bench.XXXXXX")
PIDS=()

stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do # up to 5 s to drain, then SIGKILL
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

# CPU pinning: core 1 for the proxy under test, core 0 for wrk and the upstream.
if taskset -c 0 true 2>/dev/null && taskset -c 1 true 2>/dev/null; then
  PIN_LOAD=(taskset -c 0)
  PIN_PROXY=(taskset -c 1)
  PINNING="proxy under test on CPU 1; wrk, dev upstream and redis-server on CPU 0"
else
  PIN_LOAD=()
  PIN_PROXY=()
  PINNING="NOT pinned (CPUs 0 and 1 are not both available to this process)"
  log "warning: cannot pin to CPUs 0 and 1; running unpinned, numbers are less comparable"
fi

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
NEXT_PORT=${BENCH_PORT_BASE:-$((20000 + RANDOM % 20000))}
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
# 3. Targets.

rand_hex() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }

pick_port
UPSTREAM_PORT=$PICKED_PORT
log "starting dev upstream on 127.0.0.1:$UPSTREAM_PORT (1 worker, ${PIN_LOAD[*]:-unpinned})"
RUST_LOG=warn "${PIN_LOAD[@]}" "$UPSTREAM_BIN" --listen "127.0.0.1:$UPSTREAM_PORT" --workers 1 \
  --latency-ms 0 --token-delay-ms 0 >"$TMP/upstream.log" 2>&1 &
UPSTREAM_PID=$!
PIDS+=("$UPSTREAM_PID")
wait_ready "dev upstream" "$UPSTREAM_PID" "http://127.0.0.1:$UPSTREAM_PORT/health" "$TMP/upstream.log"

USER_KEY="igk_bench_user_$(rand_hex)"
# An admin key for reading /metrics (limiter fallbacks, backend errors, refusals) between runs. Every
# gateway instance gets it, so the memory and redis runs stay configured identically.
ADMIN_KEY="igk_bench_admin_$(rand_hex)"

GATEWAY_PID=
GATEWAY_NAME=
# start_gateway NAME [VAR=VALUE ...]: one gateway instance with the common settings, plus the given
# environment (the rate-limit backend, or a tighter limit), which overrides them.
start_gateway() {
  local name=$1
  shift
  pick_port
  GATEWAY_PORT=$PICKED_PORT
  GATEWAY_NAME=$name
  mkdir -p "$TMP/gateway-$name"
  # Endpoint limits are YAML-only; raise /inference's (500/minute by default) so nothing is
  # refused, keeping the other defaults. Per-key limits are raised through the environment.
  cat >"$TMP/gateway-$name/gateway.yaml" <<'YAML'
rate_limit:
  endpoints:
    /health: 1000/minute
    /inference: 1000000000/minute
    /inference/batch: 100/minute
    /metrics: 100/minute
    /models: 200/minute
    /models/load: 10/minute
YAML
  log "starting infergate gateway '$name' on 127.0.0.1:$GATEWAY_PORT (1 worker, ${PIN_PROXY[*]:-unpinned})${*:+: $*}"
  # A clean environment and a temp working directory: no .env, RUST_LOG or INFERGATE_* leaks in.
  # RATE_LIMIT_FAILURE_MODE and RATE_LIMIT_REDIS_TIMEOUT_MS only matter with the redis backend;
  # they are set for every instance so that the backend is the only difference between runs.
  (
    cd "$TMP/gateway-$name"
    exec env -i PATH="$PATH" HOME="${HOME:-/root}" \
      INFERGATE_LISTEN="127.0.0.1:$GATEWAY_PORT" \
      INFERGATE_UPSTREAM="http://127.0.0.1:$UPSTREAM_PORT" \
      INFERGATE_WORKERS=1 \
      INFERGATE_KEYS_FILE="$TMP/gateway-$name/no-such-keys-file.yaml" \
      API_KEYS="$USER_KEY:user,$ADMIN_KEY:admin" \
      RATE_LIMIT_AUTHENTICATED=1000000000/minute \
      RATE_LIMIT_ADMIN=1000000000/minute \
      RATE_LIMIT_FAILURE_MODE=closed \
      RATE_LIMIT_REDIS_TIMEOUT_MS="$REDIS_TIMEOUT_MS" \
      LOG_LEVEL=warn \
      "$@" \
      "${PIN_PROXY[@]}" "$GATEWAY_BIN" --config "$TMP/gateway-$name/gateway.yaml"
  ) >"$TMP/gateway-$name.log" 2>&1 &
  GATEWAY_PID=$!
  PIDS+=("$GATEWAY_PID")
  wait_ready "infergate gateway '$name'" "$GATEWAY_PID" "http://127.0.0.1:$GATEWAY_PORT/health" "$TMP/gateway-$name.log"
}

# stop_gateway: keep what the instance logged (warnings and errors only at LOG_LEVEL=warn), stop it.
stop_gateway() {
  local lines
  lines=$(grep -c . "$TMP/gateway-$GATEWAY_NAME.log" || true)
  if [[ $lines -gt 0 ]]; then
    log "gateway '$GATEWAY_NAME' log ($lines lines; last 10):"
    tail -n 10 "$TMP/gateway-$GATEWAY_NAME.log" | sed 's/^/    /' >&2
    GATEWAY_LOG_NOTES+=("gateway '$GATEWAY_NAME' logged $lines warning/error line(s); last: $(tail -n 1 "$TMP/gateway-$GATEWAY_NAME.log" | cut -c1-300)")
  fi
  stop_pid "$GATEWAY_PID"
}
GATEWAY_LOG_NOTES=()

# /health/ready of the running instance: "STATUS BACKEND BREAKER" (e.g. "ready redis closed").
gateway_ready_state() {
  local body inner outer st be br
  body=$(curl -sS --max-time 5 "http://127.0.0.1:$GATEWAY_PORT/health/ready" 2>/dev/null | tr -d '\n\r ' || true)
  inner=$(grep -o '"rate_limiter":{[^}]*}' <<<"$body" || true)
  outer=${body/"$inner"/}
  st=$(grep -o '"status":"[a-z_]*"' <<<"$outer" | head -n 1 | cut -d'"' -f4 || true)
  be=$(grep -o '"backend":"[a-z_]*"' <<<"$inner" | head -n 1 | cut -d'"' -f4 || true)
  br=$(grep -o '"breaker":"[a-z_]*"' <<<"$inner" | head -n 1 | cut -d'"' -f4 || true)
  echo "${st:-?} ${be:-?} ${br:--}"
}

# Limiter counters from the running instance's /metrics (admin key): "FALLBACKS BACKEND_ERRORS
# REJECTIONS", or "? ? ?" when /metrics cannot be read.
limiter_counters() {
  local body
  if ! body=$(curl -fsS --max-time 5 -H "X-API-Key: $ADMIN_KEY" "http://127.0.0.1:$GATEWAY_PORT/metrics" 2>/dev/null); then
    echo "? ? ?"
    return 0
  fi
  awk '
    $1 ~ /^infergate_ratelimit_fallback_decisions_total/ { f += $2 }
    $1 ~ /^infergate_ratelimit_backend_errors_total/ { e += $2 }
    $1 ~ /^infergate_ratelimit_rejections_total/ { r += $2 }
    END { printf "%d %d %d\n", f, e, r }' <<<"$body"
}

# ---------------------------------------------------------------------------------------------
# Redis: a private server for the redis-backed gateway runs (no persistence, temp dir).

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
    if ! kill -0 "$REDIS_PID" 2>/dev/null; then
      tail -n 30 "$TMP/redis.log" >&2 || true
      die "redis-server exited during startup"
    fi
    if [[ $(timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; then
      return 0
    fi
    sleep 0.1
  done
  tail -n 30 "$TMP/redis.log" >&2 || true
  die "redis-server did not answer PING on 127.0.0.1:$REDIS_PORT within ${READY_DEADLINE_SECS}s"
}

# Script calls served so far: the sum of calls= of cmdstat_evalsha and cmdstat_eval.
redis_script_calls() {
  local out
  out=$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" INFO commandstats 2>/dev/null) ||
    die "redis-cli INFO commandstats failed against 127.0.0.1:$REDIS_PORT"
  tr -d '\r' <<<"$out" | awk -F'[:,=]' '
    $1 == "cmdstat_evalsha" || $1 == "cmdstat_eval" { for (i = 2; i < NF; i++) if ($i == "calls") n += $(i + 1) }
    END { printf "%d\n", n }'
}

# The nginx config is generated and checked before any measurement, so a bad one fails fast.
write_nginx_conf() {
  pick_port
  NGINX_PORT=$PICKED_PORT
  mkdir -p "$TMP/nginx-tmp"
  local user_directive="# (not root: nginx runs as the current user)"
  if [[ $(id -u) -eq 0 ]]; then
    # As root nginx would switch its worker to "nobody", which cannot enter the private temp dir.
    user_directive="user $(id -un) $(id -gn);"
  fi
  sed -e "s|@TMP@|$TMP|g" -e "s|@PORT@|$NGINX_PORT|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" \
    -e "s|@API_KEY@|$USER_KEY|g" -e "s|@USER_DIRECTIVE@|$user_directive|g" \
    "$ROOT/scripts/bench/nginx.conf.template" >"$TMP/nginx.conf"
  "$NGINX" -t -q -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" >"$TMP/nginx.log" 2>&1 || {
    cat "$TMP/nginx.log" >&2
    die "generated nginx config $TMP/nginx.conf is invalid"
  }
}
write_nginx_conf

NGINX_PID=
start_nginx() {
  log "starting nginx on 127.0.0.1:$NGINX_PORT (1 worker process, ${PIN_PROXY[*]:-unpinned})"
  "${PIN_PROXY[@]}" "$NGINX" -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" \
    -g 'daemon off;' >>"$TMP/nginx.log" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  wait_ready "nginx" "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT/health" "$TMP/nginx-error.log"
}

# ---------------------------------------------------------------------------------------------
# Measuring.

# Latency as wrk prints it (850.00us, 1.23ms, 2.00s, 1.00m) -> milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    else if (u == "h") n *= 3600000; else if (u != "ms") { print "?"; exit }
    printf "%.2f", n
  }'
}

# A sample response, for the report when a target answers non-2xx.
sample_response() { # NAME REQUEST URL
  local name=$1 req=$2 url=$3 args=(-sS -i --max-time 5 -H "X-API-Key: $USER_KEY")
  if [[ $req == POST* ]]; then
    args+=(-X POST -H 'Content-Type: application/json' --data '{"prompt": "hello from wrk, the infergate load test"}')
  fi
  printf -- '--- sample response from %s (%s):\n' "$name" "$req" >&2
  curl "${args[@]}" "$url" 2>&1 | head -n 40 | tr -d '\r' >&2 || true
  printf -- '---\n' >&2
}

# Both proxies must do the same job: refuse a request without a key, and add the security headers.
SECURITY_HEADERS=(x-content-type-options x-frame-options x-xss-protection strict-transport-security
  referrer-policy permissions-policy content-security-policy)
check_proxy() { # NAME BASE_URL
  local name=$1 base=$2 code headers h missing=()
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "$base/v1/models" || true)
  if [[ $code != 401 ]]; then
    FAILURES+=("$name: GET /v1/models without a key answered HTTP $code, expected 401")
  fi
  headers=$(curl -sS -D - -o /dev/null --max-time 5 -H "X-API-Key: $USER_KEY" "$base/v1/models" | tr -d '\r' || true)
  for h in "${SECURITY_HEADERS[@]}"; do
    grep -qi "^$h:" <<<"$headers" || missing+=("$h")
  done
  if ((${#missing[@]})); then
    FAILURES+=("$name: security headers missing from GET /v1/models: ${missing[*]}")
  else
    log "$name: refuses a request without a key (401) and sets all ${#SECURITY_HEADERS[@]} security headers"
  fi
}

ROWS=()     # "target|request|rps|p50|p99|requests|non2xx|errors"
FAILURES=() # human-readable reasons
declare -A RPS P99 TOTAL NON2XX RT_CALLS LIMITER_NOTE

# A single request with the bench key: prints the HTTP status (000 when nothing answered).
one_request() { # REQUEST URL
  if [[ $1 == POST* ]]; then
    curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "X-API-Key: $USER_KEY" \
      -H 'Content-Type: application/json' --data '{"prompt": "hello from wrk, the infergate load test"}' "$2" || true
  else
    curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "X-API-Key: $USER_KEY" "$2" || true
  fi
}

# run_wrk TARGET REQUEST BASE_URL [MODE [DURATION_SECS]]
#   MODE allowed (default): every request should be answered 2xx; at most 1% non-2xx.
#   MODE denied: the key's limit is spent, every request should be a 429; at least 99% non-2xx.
# With REDIS_BACKED=1 the run is also measured on the Redis side (script calls during the measured
# wrk run) and against the gateway's limiter counters (fallbacks, backend errors, refusals).
REDIS_BACKED=0
run_wrk() {
  local target=$1 req=$2 base=$3 mode=${4:-allowed} secs=${5:-$DURATION_SECS} url out args
  local -a script=()
  if [[ $req == POST* ]]; then
    script=(-s "$ROOT/scripts/bench/inference.lua")
    url=$base/inference
  else
    url=$base/v1/models
  fi
  args=(-t"$THREADS" -c"$CONNECTIONS" --latency --timeout 5s -H "X-API-Key: $USER_KEY" "${script[@]}")

  # Sanity check first: one request must answer 200 (429 on the denied path), otherwise the
  # numbers mean nothing.
  local code expect=200
  [[ $mode == denied ]] && expect=429
  code=$(one_request "$req" "$url")
  if [[ $code != "$expect" ]]; then
    log "warning: $target $req answered HTTP $code to a single request before the load test (expected $expect)"
    sample_response "$target" "$req" "$url"
    [[ $mode == denied ]] && FAILURES+=("$target $req: a request after the key's limit was spent answered HTTP $code, expected 429")
  fi

  if ((WARMUP_SECS > 0)); then
    log "$target $req: warm-up ${WARMUP_SECS}s"
    timeout --foreground $((WARMUP_SECS + 30)) "${PIN_LOAD[@]}" wrk "${args[@]}" -d"${WARMUP_SECS}s" "$url" >/dev/null ||
      die "wrk warm-up against $target failed or hung"
  fi

  local calls_before=0 calls_after=0 lim_before="" lim_after=""
  if ((REDIS_BACKED)); then
    sleep 0.3 # let the warm-up's last in-flight requests finish before counting
    lim_before=$(limiter_counters) # (its own limiter call happens before the Redis count starts)
    calls_before=$(redis_script_calls)
  fi
  log "$target $req: wrk -t$THREADS -c$CONNECTIONS -d${secs}s $url"
  out=$(timeout --foreground $((secs + 30)) "${PIN_LOAD[@]}" wrk "${args[@]}" -d"${secs}s" "$url") ||
    die "wrk against $target failed or hung"
  if ((REDIS_BACKED)); then
    sleep 0.3 # requests still in flight when wrk stopped reach Redis too; let them finish
    calls_after=$(redis_script_calls)
    lim_after=$(limiter_counters)
  fi
  printf '%s\n' "$out" >"$TMP/wrk-$target-${req%% *}.txt"
  printf '%s\n' "$out" | sed 's/^/    /' >&2

  local rps p50 p99 total non2xx errors
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  total=$(awk '/ requests in / { print $1 }' <<<"$out")
  non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' <<<"$out")
  errors=$(awk '/Socket errors:/ { sub(/^ *Socket errors: */, ""); print }' <<<"$out")
  [[ -n $rps && -n $p50 && -n $p99 && -n $total ]] || die "could not parse wrk output for $target $req"
  non2xx=${non2xx:-0}
  p50=$(to_ms "$p50")
  p99=$(to_ms "$p99")
  RPS[$target/$req]=$rps
  P99[$target/$req]=$p99
  TOTAL[$target/$req]=$total
  NON2XX[$target/$req]=$non2xx
  ROWS+=("$target|$req|$rps|$p50|$p99|$total|$non2xx|${errors:-none}")

  ((total > 0)) || FAILURES+=("$target $req: no request completed")
  if [[ $mode == denied ]]; then
    log "$target $req: $non2xx of $total responses were not 2xx/3xx (expected: nearly all, 429)"
    if ((total == 0 || non2xx * 100 < total * 99)); then
      FAILURES+=("$target $req: only $non2xx of $total responses were refused; expected at least 99% (429s)")
    fi
  elif ((non2xx > 0)); then
    log "$target $req: $non2xx of $total responses were not 2xx/3xx"
    sample_response "$target" "$req" "$url"
    if ((total == 0 || non2xx * 100 > total)); then
      FAILURES+=("$target $req: $non2xx of $total responses were not 2xx/3xx (more than 1%)")
    fi
  fi
  if [[ -n $errors ]]; then
    log "$target $req: socket errors: $errors"
  fi

  if ((REDIS_BACKED)); then
    local calls=$((calls_after - calls_before))
    RT_CALLS[$target/$req]=$calls
    log "$target $req: Redis script calls (EVALSHA + EVAL) during the run: $calls for $total requests"
    if [[ $mode == denied ]]; then
      # Refused locally from the deny cache: no round trip. Allow 1% for cache refreshes.
      if ((total > 0 && calls * 100 > total)); then
        FAILURES+=("$target $req: $calls Redis round trips for $total refused requests (more than 1%; the local deny cache should answer them)")
      fi
    else
      # Exactly one per request; the requests in flight when wrk stopped (at most one per
      # connection) were sent to Redis but not counted by wrk.
      if ((calls < total || calls > total + CONNECTIONS)); then
        FAILURES+=("$target $req: $calls Redis round trips for $total allowed requests; expected exactly 1 per request (up to $CONNECTIONS more for requests in flight at the end)")
      fi
    fi
    local fb0 er0 rj0 fb1 er1 rj1
    read -r fb0 er0 rj0 <<<"$lim_before"
    read -r fb1 er1 rj1 <<<"$lim_after"
    if [[ $fb0 == "?" || $fb1 == "?" ]]; then
      LIMITER_NOTE[$target/$req]="limiter counters unavailable (/metrics could not be read)"
      FAILURES+=("$target $req: could not read the gateway's /metrics to check for limiter fallbacks")
    else
      local fb=$((fb1 - fb0)) er=$((er1 - er0)) rj=$((rj1 - rj0))
      LIMITER_NOTE[$target/$req]="backend errors $er, fallback decisions $fb, rate-limit refusals $rj"
      if ((er > 0 || fb > 0)); then
        FAILURES+=("$target $req: the Redis limiter failed during the run ($er backend errors/timeouts, $fb fallback decisions; RATE_LIMIT_REDIS_TIMEOUT_MS=$REDIS_TIMEOUT_MS)")
      fi
      if [[ $mode == denied ]] && ((rj < non2xx)); then
        FAILURES+=("$target $req: only $rj of the $non2xx non-2xx responses were rate-limit refusals")
      elif [[ $mode != denied ]] && ((rj > 0)); then
        FAILURES+=("$target $req: $rj requests were refused by the rate limiter; limits should be high enough for none")
      fi
    fi
  fi
}

REQUESTS=("GET /v1/models")
if [[ $WITH_INFERENCE == 1 ]]; then
  REQUESTS+=("POST /inference")
fi

for req in "${REQUESTS[@]}"; do
  run_wrk direct "$req" "http://127.0.0.1:$UPSTREAM_PORT"
done

start_gateway infergate RATE_LIMIT_STORAGE=memory
check_proxy infergate "http://127.0.0.1:$GATEWAY_PORT"
for req in "${REQUESTS[@]}"; do
  run_wrk infergate "$req" "http://127.0.0.1:$GATEWAY_PORT"
done
stop_gateway

# The same gateway with the Redis backend, then a separate instance whose key limit is spent.
REDIS_READY=()
if ((WITH_REDIS)); then
  start_redis
  REDIS_VERSION=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
  REDIS_ENV=(RATE_LIMIT_STORAGE=redis "RATE_LIMIT_REDIS_URL=redis://127.0.0.1:$REDIS_PORT")

  start_gateway infergate-redis "${REDIS_ENV[@]}"
  read -r st be br <<<"$(gateway_ready_state)"
  REDIS_READY+=("infergate-redis at start: /health/ready status=$st backend=$be breaker=$br")
  [[ $st == ready && $be == redis ]] ||
    FAILURES+=("infergate-redis: /health/ready reported status=$st backend=$be breaker=$br at start, expected ready/redis")
  check_proxy infergate-redis "http://127.0.0.1:$GATEWAY_PORT"
  REDIS_BACKED=1
  for req in "${REQUESTS[@]}"; do
    run_wrk infergate-redis "$req" "http://127.0.0.1:$GATEWAY_PORT"
  done
  REDIS_BACKED=0
  read -r st be br <<<"$(gateway_ready_state)"
  REDIS_READY+=("infergate-redis after the runs: /health/ready status=$st backend=$be breaker=$br")
  [[ $st == ready && $be == redis && $br == closed ]] ||
    FAILURES+=("infergate-redis: /health/ready reported status=$st backend=$be breaker=$br after the runs, expected ready/redis/closed")
  stop_gateway

  # Denied path: the key's own limit is 1/hour; the one request it allows is spent first, after
  # which Redis refuses once and the limiter's local deny cache answers the rest.
  DENY_LIMIT=1/hour
  start_gateway infergate-deny "${REDIS_ENV[@]}" RATE_LIMIT_AUTHENTICATED=$DENY_LIMIT
  DENY_URL="http://127.0.0.1:$GATEWAY_PORT/v1/models"
  code=$(one_request "GET /v1/models" "$DENY_URL")
  [[ $code == 200 ]] ||
    FAILURES+=("infergate-deny: the one request RATE_LIMIT_AUTHENTICATED=$DENY_LIMIT allows answered HTTP $code, expected 200")
  REDIS_BACKED=1
  run_wrk infergate-deny "GET /v1/models" "http://127.0.0.1:$GATEWAY_PORT" denied "$DENY_DURATION_SECS"
  REDIS_BACKED=0
  read -r st be br <<<"$(gateway_ready_state)"
  REDIS_READY+=("infergate-deny after the run: /health/ready status=$st backend=$be breaker=$br")
  [[ $st == ready && $be == redis && $br == closed ]] ||
    FAILURES+=("infergate-deny: /health/ready reported status=$st backend=$be breaker=$br after the run, expected ready/redis/closed")
  stop_gateway
  stop_pid "$REDIS_PID"
fi

start_nginx
check_proxy nginx "http://127.0.0.1:$NGINX_PORT"
for req in "${REQUESTS[@]}"; do
  run_wrk nginx "$req" "http://127.0.0.1:$NGINX_PORT"
done
stop_pid "$NGINX_PID"

# ---------------------------------------------------------------------------------------------
# 5. Report.

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }

mkdir -p "$RESULTS_DIR"
{
  echo "infergate load test — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "wrk $THREADS thread(s), $CONNECTIONS connections, $DURATION per run (+ ${WARMUP_SECS}s warm-up); same settings for every target"
  echo "machine: $(nproc) CPU(s) available, load average before reporting: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "pinning: $PINNING"
  echo "         direct: wrk and the dev upstream share CPU 0 (nothing runs on CPU 1)"
  echo "dev upstream: 1 worker, --latency-ms 0 --token-delay-ms 0"
  echo "infergate: INFERGATE_WORKERS=1, LOG_LEVEL=warn, a user key (X-API-Key), rate limits raised;"
  echo "           RATE_LIMIT_STORAGE=memory (infergate) or redis (infergate-redis, infergate-deny),"
  echo "           RATE_LIMIT_FAILURE_MODE=closed, RATE_LIMIT_REDIS_TIMEOUT_MS=$REDIS_TIMEOUT_MS for all three"
  if ((WITH_REDIS)); then
    echo "redis: redis-server $REDIS_VERSION on 127.0.0.1 (--save \"\" --appendonly no), ${PIN_LOAD[*]:-unpinned}"
  fi
  echo "nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), 1 worker_process, key map, keep-alive upstream, security headers"
  echo
  printf '%-16s %-16s %12s %9s %9s %10s %8s\n' target request "requests/s" "p50 ms" "p99 ms" requests non-2xx
  for row in "${ROWS[@]}"; do
    IFS='|' read -r t r rps p50 p99 total non2xx errors <<<"$row"
    note=""
    [[ $t == infergate-deny ]] && note="  (429s expected: limit $DENY_LIMIT, spent)"
    printf '%-16s %-16s %12s %9s %9s %10s %8s%s\n' "$t" "$r" "$rps" "$p50" "$p99" "$total" "$non2xx" "$note"
  done
  echo
  for req in "${REQUESTS[@]}"; do
    printf '%-16s gateway/direct = %s   gateway/nginx = %s   (requests/s)\n' "$req" \
      "$(ratio "${RPS[infergate/$req]:-0}" "${RPS[direct/$req]:-0}")" \
      "$(ratio "${RPS[infergate/$req]:-0}" "${RPS[nginx/$req]:-0}")"
  done
  if ((WITH_REDIS)); then
    echo
    echo "rate-limit backend, same gateway settings (target: redis/memory >= 0.80; 1.00 Redis round trip per allowed request):"
    printf '  %-16s %12s %12s %9s %9s %9s %12s\n' request "memory rps" "redis rps" redis/mem "mem p99" "redis p99" "round trips"
    for req in "${REQUESTS[@]}"; do
      r=$(ratio "${RPS[infergate-redis/$req]:-0}" "${RPS[infergate/$req]:-0}")
      rt=$(ratio "${RT_CALLS[infergate-redis/$req]:-0}" "${TOTAL[infergate-redis/$req]:-0}")
      verdict=ok
      awk -v r="$r" 'BEGIN { exit !(r + 0 >= 0.80) }' || verdict="BELOW TARGET"
      printf '  %-16s %12s %12s %9s %9s %9s %12s   %s\n' "$req" "${RPS[infergate/$req]:-?}" \
        "${RPS[infergate-redis/$req]:-?}" "$r" "${P99[infergate/$req]:-?}" "${P99[infergate-redis/$req]:-?}" \
        "$rt/req" "ratio $verdict"
      printf '  %-16s   Redis EVALSHA+EVAL calls %s for %s requests; %s\n' "" \
        "${RT_CALLS[infergate-redis/$req]:-?}" "${TOTAL[infergate-redis/$req]:-?}" "${LIMITER_NOTE[infergate-redis/$req]:-}"
    done
    req="GET /v1/models"
    echo "denied path (separate redis-backed instance, RATE_LIMIT_AUTHENTICATED=$DENY_LIMIT spent; 429s from the local deny cache; target ~0 round trips):"
    printf '  %-16s requests/s %s, p99 %s ms, %s of %s answered non-2xx (429), Redis round trips %s/req (%s calls)\n' \
      "$req" "${RPS[infergate-deny/$req]:-?}" "${P99[infergate-deny/$req]:-?}" "${NON2XX[infergate-deny/$req]:-?}" \
      "${TOTAL[infergate-deny/$req]:-?}" "$(awk -v c="${RT_CALLS[infergate-deny/$req]:-0}" -v t="${TOTAL[infergate-deny/$req]:-0}" \
        'BEGIN { if (t + 0 > 0) printf "%.4f", c / t; else print "n/a" }')" "${RT_CALLS[infergate-deny/$req]:-?}"
    printf '  %-16s %s\n' "" "${LIMITER_NOTE[infergate-deny/$req]:-}"
    printf '  %s\n' "${REDIS_READY[@]}"
  fi
  if ((${#GATEWAY_LOG_NOTES[@]})); then
    printf '%s\n' "${GATEWAY_LOG_NOTES[@]}"
  fi
  for row in "${ROWS[@]}"; do
    IFS='|' read -r t r _ _ _ _ _ errors <<<"$row"
    if [[ $errors != none ]]; then
      echo "socket errors, $t $r: $errors"
    fi
  done
  if ((${#FAILURES[@]})); then
    echo
    echo "FAILED:"
    printf '  %s\n' "${FAILURES[@]}"
  fi
} >"$RESULTS"

echo
cat "$RESULTS"
echo
echo "(written to ${RESULTS#"$ROOT"/})"
if ((${#INSTALLED_PKGS[@]})); then
  echo "(installed with apt-get: ${INSTALLED_PKGS[*]})"
fi

if ((${#FAILURES[@]})); then
  die "${#FAILURES[@]} check(s) failed (see FAILED above)"
fi
