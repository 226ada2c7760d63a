#!/usr/bin/env bash
# Rewrites the hash-pinned locks in requirements/ from the version ranges in pyproject.toml and
# simulator/pyproject.toml, with uv's resolver (itself installed from requirements/lock-tool.txt).
#
#   scripts/lock.sh              keep every pin that still fits the ranges (after editing a range)
#   scripts/lock.sh --upgrade    move every pin to the newest version the ranges allow
#   (or: make lock, make lock UPGRADE=1)
#
#   requirements/dev.txt        all that `make install` (so CI) puts in .venv, from dev.in
#   requirements/runtime.txt    the exporter's dependencies alone, what the image installs: the same
#                               pins as dev.txt, so the image runs what CI tested
#   requirements/build.txt      pip, setuptools and wheel (build.in), for the image's wheel build
#                               and the editable installs
#   requirements/lock-tool.txt  uv, for this script
#
# The resolution is universal (environment markers kept) for Python 3.11, the oldest version the
# project supports and the image's. Every pin carries the sha256 of each of its release files;
# pip installs them with --require-hashes. Needs the package index (PIP_INDEX_URL is honoured).
set -euo pipefail
cd "$(dirname "$0")/.."

UPGRADE=()
case "${1:-}" in
  "") ;;
  --upgrade) UPGRADE=(--upgrade) ;;
  *) echo "lock: unknown argument: $1 (see the header of scripts/lock.sh)" >&2; exit 2 ;;
esac

TOOLS=.tools/lock
if [ ! -x "$TOOLS/bin/uv" ]; then
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q --require-hashes -r requirements/lock-tool.txt
fi
# uv does not read pip's configuration: take the index from it and the CA bundle from the system.
export UV_INDEX_URL="${UV_INDEX_URL:-${PIP_INDEX_URL:-https://pypi.org/simple}}"
export UV_NATIVE_TLS=1

compile() {
  "$TOOLS/bin/uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
    --custom-compile-command "scripts/lock.sh" "${UPGRADE[@]}" "$@"
}
compile requirements/lock-tool.in -o requirements/lock-tool.txt
compile requirements/dev.in -o requirements/dev.txt \
  --no-emit-package sysdig-chargeback-exporter --no-emit-package sysdig-chargeback-simulator
# The subsets take dev.txt's pins as constraints, so a version is the same in every file.
compile pyproject.toml -c requirements/dev.txt -o requirements/runtime.txt
compile requirements/build.in -c requirements/dev.txt -o requirements/build.txt
echo "lock: requirements/{dev,runtime,build,lock-tool}.txt written"
