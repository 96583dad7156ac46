#!/usr/bin/env bash
# Install what the CPU-only TensorRT checks need into the venv VENV (default .venv):
#  - NVIDIA's real TensorRT Python bindings, one folder per version under VENV/trt-bindings/<ver>
#    (the -bindings wheels hold only the Python extension, ~1.3 MB; no CUDA/TensorRT libraries).
#    tests/tensorrt/ imports them against a stub C library to introspect the real API per version.
#  - tensorrt-rtx (TensorRT for RTX, ~95 MB): NVIDIA's ONNX parser and builder, which builds engines
#    on CPU; tests/build/ uses it to check that our QDQ ONNX parses and builds.
# Every step is best-effort: a failure only makes the matching tests skip, with a reason.
set -u
VENV="${1:-.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  echo "install_trt_check: no python at $PY" >&2
  exit 1
fi
# Versions we claim: JetPack 6.1/6.2 (10.3), JetPack 7.2 (10.16), TensorRT 11.x for x86 GPUs.
BINDINGS_VERSIONS="${TRT_BINDINGS_VERSIONS:-10.3.0 10.16.1.11 11.4.0.106}"
RTX_SPEC="${TRT_RTX_SPEC:-tensorrt-rtx==1.7.1.116}"
status=0
for ver in $BINDINGS_VERSIONS; do
  dest="$VENV/trt-bindings/$ver"
  if [ -d "$dest/tensorrt" ] || [ -d "$dest/tensorrt_bindings" ]; then
    continue  # already there: keep `make` reruns quick
  fi
  # --no-deps: the bindings' only dependency is the libs placeholder, which downloads from NVIDIA's index.
  if ! "$PY" -m pip install -q --no-deps --target "$dest" "tensorrt-cu12-bindings==$ver"; then
    echo "install_trt_check: tensorrt-cu12-bindings==$ver failed; its API checks will skip" >&2
    status=1
  fi
done
if ! "$PY" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('tensorrt_rtx') is None)" 2>/dev/null; then
  if ! "$PY" -m pip install -q "$RTX_SPEC"; then
    echo "install_trt_check: $RTX_SPEC failed; the parse/build checks will skip" >&2
    status=1
  fi
fi
exit $status
