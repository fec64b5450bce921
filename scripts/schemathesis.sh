#!/usr/bin/env bash
# schemathesis (PyPI) against both services' /openapi.json, every check on, with a fixed seed and
# example count so the run is bounded and repeatable, then the official OpenAI Python SDK against
# the gateway (scripts/openai_sdk_check.py); part of `make test`. It starts the dev
# upstream, the gateway and key-admin on free loopback ports with a throwaway file key store, and
# exits non-zero on any failure. ST_EXAMPLES / ST_SEED change the budget.
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES=${ST_EXAMPLES:-25}
SEED=${ST_SEED:-20261201}
VENV=${ST_VENV:-target/schemathesis-venv}
ST_VERSION=4.32.5
OPENAI_VERSION=2.8.1

if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$ST_VERSION" ||
   ! "$VENV/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
  echo "installing schemathesis $ST_VERSION and openai $OPENAI_VERSION into $VENV (PyPI)"
  python3 -m venv "$VENV" || {
    echo "python3 -m venv failed: install it with apt-get install python3-venv" >&2
    exit 1
  }
  "$VENV/bin/pip" install -q "schemathesis==$ST_VERSION" "openai==$OPENAI_VERSION"
fi
cargo build -q -p infergate-gateway -p infergate-dev-upstream -p infergate-key-admin --bins

tmp=$(mktemp -d)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); GW=$(free_port); KA=$(free_port); SDK_GW=$(free_port)
ADMIN_KEY="st-admin-key-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
USER_KEY="st-user-key-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"

./target/debug/infergate-dev-upstream --listen "127.0.0.1:$UP" >"$tmp/upstream.log" 2>&1 &
pids+=($!)
env -i PATH="$PATH" HOME="$tmp" \
  INFERGATE_LISTEN="127.0.0.1:$GW" INFERGATE_WORKERS=1 INFERGATE_UPSTREAM="http://127.0.0.1:$UP" \
  API_KEY="$ADMIN_KEY" API_KEYS="$USER_KEY:user" INFERGATE_KEYS_FILE="$tmp/keys.yaml" \
  RATE_LIMIT_ENABLED=false \
  ./target/debug/infergate-gateway >"$tmp/gateway.log" 2>&1 &
pids+=($!)
# The OpenAI SDK's gateway runs as deployed, with rate limiting on (the SDK reads its headers);
# schemathesis' has it off so thousands of generated calls are not refused.
# Its user role also has a token budget and a concurrency cap, so the SDK reads the token headers
# and meets a cut stream.
mkdir -p "$tmp/sdk"
printf 'rate_limit:\n  roles:\n    user: {tokens_per_minute: 1000000, max_concurrent: 16}\n' >"$tmp/sdk/gateway.yaml"
env -i PATH="$PATH" HOME="$tmp" \
  INFERGATE_LISTEN="127.0.0.1:$SDK_GW" INFERGATE_WORKERS=1 INFERGATE_UPSTREAM="http://127.0.0.1:$UP" \
  API_KEY="$ADMIN_KEY" API_KEYS="$USER_KEY:user" INFERGATE_KEYS_FILE="$tmp/sdk/keys.yaml" \
  ./target/debug/infergate-gateway --config "$tmp/sdk/gateway.yaml" >"$tmp/sdk-gateway.log" 2>&1 &
pids+=($!)

# key-admin: an admin key minted into the throwaway store with the CLI, then the service.
export INFERGATE_ADMIN_LISTEN="127.0.0.1:$KA" INFERGATE_KEYS_FILE="$tmp/keys.yaml" KEY_STORE=file
KA_KEY=$(./target/debug/infergate-admin keys generate --roles admin --name schemathesis | awk '{ print $1; exit }')
(cd "$tmp" && exec "$OLDPWD/target/debug/infergate-admin" serve) >"$tmp/key-admin.log" 2>&1 &
pids+=($!)

for url in "http://127.0.0.1:$UP/health" "http://127.0.0.1:$GW/health" "http://127.0.0.1:$KA/health" \
  "http://127.0.0.1:$SDK_GW/health"; do
  for _ in $(seq 1 100); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$url" 2>/dev/null && break
    sleep 0.1
  done
done

status=0
export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=schemathesis_hooks
run() { # name url key
  echo "=== schemathesis: $1 ($EXAMPLES examples per operation, seed $SEED)"
  "$VENV/bin/st" run "$2/openapi.json" --url "$2" --checks all -H "X-API-Key: $3" \
    --max-examples "$EXAMPLES" --seed "$SEED" --workers 1 --request-timeout 10 \
    --suppress-health-check all --warnings off --no-color || status=1
}
run gateway "http://127.0.0.1:$GW" "$ADMIN_KEY"
run key-admin "http://127.0.0.1:$KA" "$KA_KEY"
echo "=== OpenAI Python SDK against the gateway"
"$VENV/bin/python" scripts/openai_sdk_check.py "http://127.0.0.1:$SDK_GW" "$USER_KEY" || status=1
if [ "$status" -ne 0 ]; then
  echo "--- gateway log (tail)"; tail -n 30 "$tmp/gateway.log"
  echo "--- SDK gateway log (tail)"; tail -n 30 "$tmp/sdk-gateway.log"
  echo "--- key-admin log (tail)"; tail -n 30 "$tmp/key-admin.log"
fi
exit "$status"
