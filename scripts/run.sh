#!/usr/bin/env bash
# `make run`: build, start the development upstream, start the gateway with the shipped config.
# Creates config/api_keys.yaml with fresh demo keys the first time (it is git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=config/api_keys.yaml
UPSTREAM_LISTEN=${DEV_UPSTREAM_LISTEN:-127.0.0.1:9000}

cargo build -q -p infergate-gateway -p infergate-dev-upstream --bins

rand_hex() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

if [[ ! -f $KEYS ]]; then
  umask 077
  cat > "$KEYS" <<YAML
# Demo keys created by \`make run\` (development only; this file is git-ignored).
keys:
  "igk_demo_admin_$(rand_hex)":
    name: demo-admin
    role: admin
  "igk_demo_user_$(rand_hex)":
    name: demo-user
    role: user
  "igk_demo_ro_$(rand_hex)":
    name: demo-readonly
    role: readonly
YAML
  echo "created $KEYS with fresh demo keys"
fi

# The key whose entry carries `name: $1` (keys are the YAML map's keys, one level under `keys:`).
key_for() {
  awk -v want="$1" '
    /^  [^ #]/ { key = $0; sub(/^  "?/, "", key); sub(/"?:[[:space:]]*$/, "", key) }
    $1 == "name:" && $2 == want { print key; exit }
  ' "$KEYS"
}
ADMIN_KEY=$(key_for demo-admin)
USER_KEY=$(key_for demo-user)
RO_KEY=$(key_for demo-readonly)

./target/debug/infergate-dev-upstream --listen "$UPSTREAM_LISTEN" &
UPSTREAM_PID=$!
trap 'kill $UPSTREAM_PID 2>/dev/null || true' EXIT

cat <<BANNER

  infergate gateway   http://127.0.0.1:8000   (docs: http://127.0.0.1:8000/docs)
  dev upstream        http://$UPSTREAM_LISTEN

  export USER_KEY=$USER_KEY
  export RO_KEY=$RO_KEY
  export ADMIN_KEY=$ADMIN_KEY

  curl -s http://127.0.0.1:8000/health
  curl -s -H "X-API-Key: \$USER_KEY" http://127.0.0.1:8000/inference -d '{"prompt":"hello"}'

BANNER

INFERGATE_UPSTREAM=${INFERGATE_UPSTREAM:-http://$UPSTREAM_LISTEN} \
  ./target/debug/infergate-gateway --config config/gateway.yaml
