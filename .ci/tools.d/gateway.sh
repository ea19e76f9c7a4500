#!/usr/bin/env bash
# The gateway check renders Swagger UI in headless Chromium (Debian's package). Idempotent and quiet.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
