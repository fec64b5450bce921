#!/usr/bin/env bash
# `make k8s-validate`: render deploy/k8s's overlays and validate them offline (deploy/k8s/tools/validate.py).
# Installs what it needs on first use into a virtualenv under target/ (kubernetes-validate from
# PyPI, which bundles the Kubernetes JSON schemas, and PyYAML). Rendering is `kubectl kustomize`
# (.ci/run installs kubectl when it is missing). Then the failing fixtures prove every policy
# check can fail (validate.py --self-test, deploy/k8s/tools/failing-fixtures.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${K8S_VALIDATE_VENV:-target/k8s-venv}
PKG="kubernetes-validate==1.37.0"

if ! "$VENV/bin/python" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
  echo "k8s-validate: installing $PKG into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$PKG"
fi
export PYTHONDONTWRITEBYTECODE=1
"$VENV/bin/python" deploy/k8s/tools/validate.py "$@"
"$VENV/bin/python" deploy/k8s/tools/validate.py --self-test
