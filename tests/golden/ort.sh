#!/usr/bin/env bash
# tests/golden/ort.sh BUILD_DIR SOURCE_DIR WORK_DIR [--small-only]: the engine against ONNX Runtime
# (run_ort.py) on the golden fixtures, making them first if the golden test has not. Exits 77
# (skipped) only when ONNX Runtime cannot be installed from PyPI.
set -uo pipefail
build=$1 src=$2 work=$3
fx=$work/onnx
if [ ! -f "$fx/manifest.json" ]; then
  /usr/bin/python3 "$src/tests/fixtures/make_onnx.py" "$fx" --no-verify ${4:-} > /dev/null || exit 1
fi
py=$("$src/tools/ort-venv" "$build/ort-venv") || exit $?
exec "$py" "$src/tests/golden/run_ort.py" "$build" "$fx" "$work/ort"
