#!/usr/bin/env bash
# Tools the tests and checks need that a fresh machine lacks, from the registries this machine
# reaches (PyPI, apt). Idempotent: installs only what is missing.
set -euo pipefail
need_pip=()
python3 -c "import aiosmtpd" 2>/dev/null || need_pip+=(aiosmtpd)
python3 -c "import openapi_spec_validator" 2>/dev/null || need_pip+=(openapi-spec-validator)
if [ ${#need_pip[@]} -gt 0 ]; then
  pip install --quiet "${need_pip[@]}"
fi
