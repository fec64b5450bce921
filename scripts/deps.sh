#!/usr/bin/env bash
# Installs what `make run` or `make test` needs beyond the Rust toolchain, saying what it
# installs; what it cannot install is named with the command that would install it.
#
#   scripts/deps.sh run    curl, openssl and python3 (the README tour uses them)
#   scripts/deps.sh test   the above, plus redis-server (tests start their own), promtool (alert
#                          rules), chromium and chromium-driver (the docs pages and the console, in a real browser
#                          over WebDriver), python3-venv (schemathesis and the OpenAI SDK run from a
#                          virtualenv, from PyPI), kubectl with kustomize (the manifests), and
#                          rustfmt and clippy
#
# Packages come from Debian's apt (the only prerequisite is Rust >= 1.89 and a C compiler).
# apt-get runs when this user may (root, or passwordless sudo); otherwise nothing is installed and
# each missing tool is reported with its install command.
set -euo pipefail
profile=${1:-test}
[[ $profile == run || $profile == test ]] || {
  echo "usage: $0 run|test" >&2
  exit 64
}

# tool → Debian package
declare -a tools=(curl:curl openssl:openssl python3:python3)
if [[ $profile == test ]]; then
  tools+=(redis-server:redis-server promtool:prometheus chromium:chromium chromedriver:chromium-driver)
fi

missing=()
for pair in "${tools[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [[ $profile == test ]] && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing+=(python3-venv)
fi

apt=()
if command -v apt-get >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]]; then
    apt=(apt-get)
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    apt=(sudo apt-get)
  fi
fi

failed=()
if ((${#missing[@]})); then
  if ((${#apt[@]})); then
    echo "make $profile: installing with apt-get: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${apt[@]}" update -qq >&2
    "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >&2 || failed+=("${missing[@]}")
  else
    failed+=("${missing[@]}")
  fi
fi

if [[ $profile == test ]]; then
  # `make k8s-validate` renders with `kubectl kustomize` (kustomize v4+; Debian's
  # kubernetes-client is too old). The kubectl package comes from the Kubernetes apt repository
  # where one is configured.
  if ! kubectl kustomize --help >/dev/null 2>&1; then
    if ((${#apt[@]})); then
      echo "make $profile: installing with apt-get: kubectl" >&2
      "${apt[@]}" install -y -qq --no-install-recommends kubectl >&2 || failed+=(kubectl)
    else
      failed+=(kubectl)
    fi
  fi
  for c in rustfmt clippy; do
    if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
      echo "make $profile: installing with rustup: $c" >&2
      rustup component add "$c" >&2 || failed+=("$c (rustup component add $c)")
    fi
  done
fi

if ((${#failed[@]})); then
  for p in "${failed[@]}"; do
    case $p in
      kubectl) echo "make $profile: kubectl with kustomize is missing: install it from the Kubernetes apt repository (https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/), then apt-get install kubectl" >&2 ;;
      *'(rustup'*) echo "make $profile: $p failed" >&2 ;;
      *) echo "make $profile: $p is missing: install it with: sudo apt-get install -y $p" >&2 ;;
    esac
  done
  # The gateway runs without them; only the tour's commands need them.
  [[ $profile == run ]] && exit 0
  exit 1
fi
