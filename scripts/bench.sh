#!/usr/bin/env bash
# `make bench`: a first load test of the infergate gateway.
#
# Measures, with the same wrk settings, three targets in front of one dev upstream (1 worker):
#   direct     wrk -> dev upstream
#   infergate  wrk -> infergate-gateway (1 worker, auth + rate limiting + security headers) -> upstream
#   nginx      wrk -> nginx (1 worker, API-key map, keep-alive proxy, same headers) -> upstream
# for GET /v1/models (proxied, authenticated, rate-limited) and POST /inference (wrk Lua script).
#
# CPU pinning (2 cores): the proxy under test on core 1, wrk and the upstream on core 0.
#
# Environment knobs:
#   BENCH_DURATION     wrk -d per run (default 10s)
#   BENCH_CONNECTIONS  wrk -c (default 32)
#   BENCH_THREADS      wrk -t (default 1)
#   BENCH_WARMUP       warm-up run before each measurement, same settings (default 1s; 0 = none)
#   BENCH_INFERENCE    1 (default) also measures POST /inference; 0 skips it
#   BENCH_PORT_BASE    first port to try for the three listeners (default: random in 20000-39999)
#   BENCH_NO_INSTALL   1 = never call apt-get (fail if wrk/nginx/curl are missing)
#
# Results: printed, and written to target/bench/results.txt. Exits non-zero if a target could not be
# started, answered more than 1% non-2xx responses, or a proxy did not refuse a keyless request or
# left out a security header.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-1}
WARMUP=${BENCH_WARMUP:-1s}
WITH_INFERENCE=${BENCH_INFERENCE:-1}
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

# ---------------------------------------------------------------------------------------------
# 1. Tools: wrk, nginx, curl (installed with apt-get when missing).

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
  ((${#missing[@]})) || return 0

  if [[ ${BENCH_NO_INSTALL:-0} == 1 ]]; then
    die "missing tools: ${missing[*]} (BENCH_NO_INSTALL=1, so not installing; apt-get install wrk nginx-light curl)"
  fi
  command -v apt-get >/dev/null 2>&1 ||
    die "missing tools: ${missing[*]}, and apt-get is not available to install them; install wrk, nginx and curl by hand"
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      die "missing tools: ${missing[*]}; installing them needs root (run as root, or: sudo apt-get install wrk nginx-light curl)"
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
      *)
        [[ -n $(apt_candidate "$m") ]] || die "package '$m' is not available from apt"
        pkgs+=("$m")
        ;;
    esac
  done
  # Keep the nginx package from starting the system-wide service (port 80) during installation.
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
  PINNING="proxy under test on CPU 1; wrk and dev upstream on CPU 0"
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
USER_KEY="igk_bench_user_$(rand_hex)"

pick_port
UPSTREAM_PORT=$PICKED_PORT
log "starting dev upstream on 127.0.0.1:$UPSTREAM_PORT (1 worker, ${PIN_LOAD[*]:-unpinned})"
RUST_LOG=warn "${PIN_LOAD[@]}" "$UPSTREAM_BIN" --listen "127.0.0.1:$UPSTREAM_PORT" --workers 1 \
  --latency-ms 0 --token-delay-ms 0 >"$TMP/upstream.log" 2>&1 &
UPSTREAM_PID=$!
PIDS+=("$UPSTREAM_PID")
wait_ready "dev upstream" "$UPSTREAM_PID" "http://127.0.0.1:$UPSTREAM_PORT/health" "$TMP/upstream.log"

GATEWAY_PID=
start_gateway() {
  pick_port
  GATEWAY_PORT=$PICKED_PORT
  mkdir -p "$TMP/gateway"
  # Endpoint limits are YAML-only; raise /inference's (500/minute by default) so nothing is
  # refused, keeping the other defaults. Per-key limits are raised through the environment.
  cat >"$TMP/gateway/gateway.yaml" <<'YAML'
rate_limit:
  endpoints:
    /health: 1000/minute
    /inference: 1000000000/minute
    /inference/batch: 100/minute
    /metrics: 100/minute
    /models: 200/minute
    /models/load: 10/minute
YAML
  log "starting infergate gateway on 127.0.0.1:$GATEWAY_PORT (1 worker, ${PIN_PROXY[*]:-unpinned})"
  # A clean environment and a temp working directory: no .env, RUST_LOG or INFERGATE_* leaks in.
  (
    cd "$TMP/gateway"
    exec env -i PATH="$PATH" HOME="${HOME:-/root}" \
      INFERGATE_LISTEN="127.0.0.1:$GATEWAY_PORT" \
      INFERGATE_UPSTREAM="http://127.0.0.1:$UPSTREAM_PORT" \
      INFERGATE_WORKERS=1 \
      INFERGATE_KEYS_FILE="$TMP/gateway/no-such-keys-file.yaml" \
      API_KEYS="$USER_KEY:user" \
      RATE_LIMIT_AUTHENTICATED=1000000000/minute \
      RATE_LIMIT_ADMIN=1000000000/minute \
      LOG_LEVEL=warn \
      "${PIN_PROXY[@]}" "$GATEWAY_BIN" --config "$TMP/gateway/gateway.yaml"
  ) >"$TMP/gateway.log" 2>&1 &
  GATEWAY_PID=$!
  PIDS+=("$GATEWAY_PID")
  wait_ready "infergate gateway" "$GATEWAY_PID" "http://127.0.0.1:$GATEWAY_PORT/health" "$TMP/gateway.log"
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
declare -A RPS

run_wrk() { # TARGET REQUEST URL
  local target=$1 req=$2 url=$3 base=$3 out args
  local -a script=()
  if [[ $req == POST* ]]; then
    script=(-s "$ROOT/scripts/bench/inference.lua")
    url=$base/inference
  else
    url=$base/v1/models
  fi
  args=(-t"$THREADS" -c"$CONNECTIONS" --latency --timeout 5s -H "X-API-Key: $USER_KEY" "${script[@]}")

  # Sanity check first: one request must answer 200 (otherwise the numbers mean nothing).
  local code
  if [[ $req == POST* ]]; then
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "X-API-Key: $USER_KEY" \
      -H 'Content-Type: application/json' --data '{"prompt": "hello from wrk, the infergate load test"}' "$url" || true)
  else
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "X-API-Key: $USER_KEY" "$url" || true)
  fi
  if [[ $code != 200 ]]; then
    log "warning: $target $req answered HTTP $code to a single request before the load test"
    sample_response "$target" "$req" "$url"
  fi

  if ((WARMUP_SECS > 0)); then
    log "$target $req: warm-up ${WARMUP_SECS}s"
    timeout --foreground $((WARMUP_SECS + 30)) "${PIN_LOAD[@]}" wrk "${args[@]}" -d"${WARMUP_SECS}s" "$url" >/dev/null ||
      die "wrk warm-up against $target failed or hung"
  fi
  log "$target $req: wrk -t$THREADS -c$CONNECTIONS -d$DURATION $url"
  out=$(timeout --foreground $((DURATION_SECS + 30)) "${PIN_LOAD[@]}" wrk "${args[@]}" -d"$DURATION" "$url") ||
    die "wrk against $target failed or hung"
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
  ROWS+=("$target|$req|$rps|$p50|$p99|$total|$non2xx|${errors:-none}")

  if ((non2xx > 0)); then
    log "$target $req: $non2xx of $total responses were not 2xx/3xx"
    sample_response "$target" "$req" "$url"
    if ((total == 0 || non2xx * 100 > total)); then
      FAILURES+=("$target $req: $non2xx of $total responses were not 2xx/3xx (more than 1%)")
    fi
  fi
  ((total > 0)) || FAILURES+=("$target $req: no request completed")
  if [[ -n $errors ]]; then
    log "$target $req: socket errors: $errors"
  fi
}

REQUESTS=("GET /v1/models")
if [[ $WITH_INFERENCE == 1 ]]; then
  REQUESTS+=("POST /inference")
fi

for req in "${REQUESTS[@]}"; do
  run_wrk direct "$req" "http://127.0.0.1:$UPSTREAM_PORT"
done

start_gateway
check_proxy infergate "http://127.0.0.1:$GATEWAY_PORT"
for req in "${REQUESTS[@]}"; do
  run_wrk infergate "$req" "http://127.0.0.1:$GATEWAY_PORT"
done
# Keep what the gateway logged (warnings and errors only at LOG_LEVEL=warn).
GATEWAY_LOG_LINES=$(grep -c . "$TMP/gateway.log" || true)
if [[ $GATEWAY_LOG_LINES -gt 0 ]]; then
  log "gateway log ($GATEWAY_LOG_LINES lines; last 10):"
  tail -n 10 "$TMP/gateway.log" | sed 's/^/    /' >&2
fi
stop_pid "$GATEWAY_PID"

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
  echo "infergate: INFERGATE_WORKERS=1, LOG_LEVEL=warn, a user key (X-API-Key), rate limits raised"
  echo "nginx: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), 1 worker_process, key map, keep-alive upstream, security headers"
  echo
  printf '%-10s %-16s %12s %9s %9s %10s %8s\n' target request "requests/s" "p50 ms" "p99 ms" requests non-2xx
  for row in "${ROWS[@]}"; do
    IFS='|' read -r t r rps p50 p99 total non2xx errors <<<"$row"
    printf '%-10s %-16s %12s %9s %9s %10s %8s\n' "$t" "$r" "$rps" "$p50" "$p99" "$total" "$non2xx"
  done
  echo
  for req in "${REQUESTS[@]}"; do
    printf '%-16s gateway/direct = %s   gateway/nginx = %s   (requests/s)\n' "$req" \
      "$(ratio "${RPS[infergate/$req]:-0}" "${RPS[direct/$req]:-0}")" \
      "$(ratio "${RPS[infergate/$req]:-0}" "${RPS[nginx/$req]:-0}")"
  done
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
