#!/usr/bin/env bash
# Tools the tests and checks need that a fresh machine lacks, from the registries this machine
# reaches (PyPI, apt, npm). Idempotent: each part installs only what is missing. Each area keeps its
# own installer in .ci/tools.d/.
set -euo pipefail
cd "$(dirname "$0")/.."
need_pip=()
python3 -c "import aiosmtpd" 2>/dev/null || need_pip+=(aiosmtpd)
python3 -c "import openapi_spec_validator" 2>/dev/null || need_pip+=(openapi-spec-validator)
if [ ${#need_pip[@]} -gt 0 ]; then
  pip install --quiet "${need_pip[@]}"
fi
for part in .ci/tools.d/*.sh; do
  [ -e "$part" ] || continue
  echo "-- $part"
  bash "$part"
done
