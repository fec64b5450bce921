#!/usr/bin/env bash
# `make run`: build, then start the development upstream, key-admin and the gateway against the
# same file key store (config/api_keys.yaml, git-ignored). Fresh demo keys replace the last run's
# on every run (they expire after a day); only their hashes are stored, so they are printed here,
# once. Ports in use are reported before anything is minted.
set -euo pipefail
cd "$(dirname "$0")/.."

UPSTREAM_LISTEN=${DEV_UPSTREAM_LISTEN:-127.0.0.1:9000}

# A second `make run` (or anything else on these ports) would mint keys and print the banner
# before failing with "Address already in use": look first, and say who holds the port.
for port in 8000 8001 "${UPSTREAM_LISTEN##*:}"; do
  if python3 - "$port" 2>/dev/null <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
PY
  then
    holder=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(([^)]*))' | head -1 || true)
    echo "make run: port $port is already in use${holder:+ by $holder}; stop that process (another make run?) and try again" >&2
    exit 1
  fi
done

# cargo's own progress, so a first build (a few minutes) does not look hung.
echo "make run: building the gateway, key-admin and the dev upstream (the first build takes a few minutes)" >&2
cargo build -p infergate-gateway -p infergate-dev-upstream -p infergate-key-admin --bins

ADMIN=./target/debug/infergate-admin
# The demo keys of the last run are replaced, not piled up: delete those (named demo-*, minted
# by the CLI) before minting new ones.
old=$("$ADMIN" --config config/key-admin.yaml keys list --json 2>/dev/null | python3 -c '
import json, sys
for k in json.load(sys.stdin):
    if k.get("created_by") == "cli" and k.get("name") in ("demo-admin", "demo-user", "demo-readonly"):
        print(k["id"])' 2>/dev/null || true)
for id in $old; do
  "$ADMIN" --config config/key-admin.yaml keys delete "$id" >/dev/null
done
[[ -n $old ]] && echo "make run: replaced the demo keys of the last run" >&2
mint() { # role → the new key
  "$ADMIN" --config config/key-admin.yaml keys generate --roles "$1" --name "demo-$1" --expires 1 |
    awk '{ print $1; exit }'
}
ADMIN_KEY=$(mint admin)
USER_KEY=$(mint user)
RO_KEY=$(mint readonly)

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

./target/debug/infergate-dev-upstream --listen "$UPSTREAM_LISTEN" &
pids+=($!)
"$ADMIN" --config config/key-admin.yaml serve &
pids+=($!)

cat <<BANNER

  infergate gateway   http://127.0.0.1:8000   (docs: http://127.0.0.1:8000/docs)
  key-admin           http://127.0.0.1:8001   (docs: http://127.0.0.1:8001/docs)
  dev upstream        http://$UPSTREAM_LISTEN

  Demo keys (shown once; they expire in a day):
  export ADMIN_KEY=$ADMIN_KEY
  export USER_KEY=$USER_KEY
  export RO_KEY=$RO_KEY

  curl -s http://127.0.0.1:8000/health
  curl -s -H "X-API-Key: \$USER_KEY" http://127.0.0.1:8000/inference -d '{"prompt":"hello"}'
  curl -s -H "X-API-Key: \$ADMIN_KEY" http://127.0.0.1:8001/v1/keys \\
       -d '{"name":"ci","role":"user","expires_in_days":30}'

BANNER

INFERGATE_UPSTREAM=${INFERGATE_UPSTREAM:-http://$UPSTREAM_LISTEN} \
  ./target/debug/infergate-gateway --config config/gateway.yaml &
pids+=($!)
wait -n "${pids[@]}"
