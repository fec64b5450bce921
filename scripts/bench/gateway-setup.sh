# The gateway as every load test here runs it (sourced by scripts/bench.sh and
# scripts/bench/instructions.sh, so `make bench` and `make bench-instructions` measure the same
# configuration): every policy on, limits raised so nothing is refused, CORS for the origin wrk
# sends, the JSON access log at info.

# gateway_setup DIR PORT UPSTREAM_PORT API_KEYS CORS_ORIGIN: writes DIR/gateway.yaml and sets
# GATEWAY_ENV, the whole environment (for `env -i`): no .env, RUST_LOG or INFERGATE_* leaks in.
gateway_setup() {
  local dir=$1 port=$2 upstream_port=$3 keys=$4 origin=$5
  # Endpoint limits are YAML-only: every route the benches call has one (raised so nothing is
  # refused), so the per-endpoint bucket is counted on every request.
  cat >"$dir/gateway.yaml" <<'YAML'
rate_limit:
  endpoints:
    /health: 1000/minute
    /inference: 1000000000/minute
    /inference/batch: 100/minute
    /metrics: 100000/minute
    /models: 200/minute
    /models/load: 10/minute
    /v1/*: 1000000000/minute
YAML
  GATEWAY_ENV=(
    PATH="$PATH" HOME="${HOME:-/root}"
    INFERGATE_LISTEN="127.0.0.1:$port"
    INFERGATE_UPSTREAM="http://127.0.0.1:$upstream_port"
    INFERGATE_WORKERS=1
    INFERGATE_KEYS_FILE="$dir/no-such-keys-file.yaml"
    API_KEYS="$keys"
    RATE_LIMIT_DEFAULT=1000000000/minute
    RATE_LIMIT_AUTHENTICATED=1000000000/minute
    RATE_LIMIT_ADMIN=1000000000/minute
    RATE_LIMIT_FAILURE_MODE=closed
    CORS_ORIGINS="$origin"
    LOG_LEVEL=info
    LOG_FORMAT=json
  )
}
