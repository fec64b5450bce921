#!/usr/bin/env bash
# Print a real Secret for deploy/k8s (the filled-in deploy/k8s/secret.example.yaml): a random
# admin credential and a fresh Ed25519 JWT key pair. Nothing is written to disk but stdout.
#
#   scripts/k8s-secrets.sh [NAMESPACE] > infergate-secrets.yaml   # keep out of git
#   kubectl apply -f infergate-secrets.yaml
#
# The admin key is in the output (admin-api-key); read it back later with
#   kubectl -n infergate get secret infergate-secrets -o jsonpath='{.data.admin-api-key}' | base64 -d
set -euo pipefail
ns=${1:-infergate}
command -v openssl >/dev/null || { echo "k8s-secrets: openssl is required" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 077
openssl genpkey -algorithm ed25519 -out "$tmp/priv.pem" 2>/dev/null
openssl pkey -in "$tmp/priv.pem" -pubout -out "$tmp/pub.pem" 2>/dev/null
admin=$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n')
indent() { sed 's/^/    /' "$1"; }
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: infergate-secrets
  namespace: $ns
  labels:
    app.kubernetes.io/name: infergate
    app.kubernetes.io/part-of: infergate
type: Opaque
stringData:
  admin-api-key: "$admin"
  jwt-private-key.pem: |
$(indent "$tmp/priv.pem")
  jwt-public-key.pem: |
$(indent "$tmp/pub.pem")
YAML
