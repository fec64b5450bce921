#!/usr/bin/env bash
# Make the compose stack's secret files (deploy/compose/secrets/ by default):
#   admin_api_key        random plaintext admin credential for key-admin (ADMIN_API_KEY_FILE)
#   jwt_private_key.pem  Ed25519 JWT signing key (key-admin)
#   jwt_public_key.pem   its public half (gateways)
#
#   scripts/compose-secrets.sh [--force] [DIR]
#
# Existing files are kept unless --force is given (then all three are replaced: every issued JWT
# stops verifying and the old admin credential stops working after `docker compose up -d`).
# Needs openssl. Prints nothing secret.
set -euo pipefail

force=""
dir=""
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) dir="$a" ;;
  esac
done
dir=${dir:-$(cd "$(dirname "$0")/.." && pwd)/deploy/compose/secrets}
command -v openssl >/dev/null || { echo "compose-secrets: openssl is required" >&2; exit 1; }

mkdir -p "$dir"
chmod 0700 "$dir"
umask 077

made=()
if [[ -n "$force" || ! -s "$dir/admin_api_key" ]]; then
  # 32 random bytes, base64url without padding: 43 characters, no spaces (>= 16 required).
  openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n' >"$dir/admin_api_key.tmp"
  mv "$dir/admin_api_key.tmp" "$dir/admin_api_key"
  made+=(admin_api_key)
fi
if [[ -n "$force" || ! -s "$dir/jwt_private_key.pem" || ! -s "$dir/jwt_public_key.pem" ]]; then
  openssl genpkey -algorithm ed25519 -out "$dir/jwt_private_key.pem.tmp" 2>/dev/null
  openssl pkey -in "$dir/jwt_private_key.pem.tmp" -pubout -out "$dir/jwt_public_key.pem.tmp" 2>/dev/null
  mv "$dir/jwt_private_key.pem.tmp" "$dir/jwt_private_key.pem"
  mv "$dir/jwt_public_key.pem.tmp" "$dir/jwt_public_key.pem"
  made+=(jwt_private_key.pem jwt_public_key.pem)
fi
# The containers run as uid 10001 and read these bind-mounted files; the 0700 directory keeps
# other host users out.
chmod 0644 "$dir/admin_api_key" "$dir/jwt_private_key.pem" "$dir/jwt_public_key.pem"

if ((${#made[@]})); then
  echo "compose-secrets: wrote ${made[*]} in $dir" >&2
else
  echo "compose-secrets: kept the existing secrets in $dir (--force to replace them)" >&2
fi
echo "compose-secrets: the admin key is in $dir/admin_api_key (export ADMIN_KEY=\$(cat $dir/admin_api_key))" >&2
