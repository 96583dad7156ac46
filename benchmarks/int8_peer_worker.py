"""Quantize one FP32 ONNX with a peer tool, inside that tool's own virtualenv (run by int8_peers.py).

    <peer venv>/bin/python int8_peer_worker.py {nncf|nncf_mixed|modelopt} FP32.onnx CALIB.npy OUT.onnx INFO.json

Reads the calibration images (NCHW float32, already normalised) from CALIB.npy, writes the INT8 QDQ
model to OUT.onnx and {"tool", "version", "seconds", "settings"} to INFO.json. Imports nothing from
edgepipe: the peer venvs hold only the peer and its own dependencies (their onnxruntime builds may
differ from the project's, which is why evaluation happens back in the main process).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def _input_name(path: str) -> str:
    import onnx

    return onnx.load(path, load_external_data=False).graph.input[0].name


def quantize_nncf(fp32: str, calib: np.ndarray, out: str, preset: str | None = None) -> dict:
    """NNCF post-training quantization, ONNX backend; preset None is NNCF's default (PERFORMANCE)."""
    import nncf
    import onnx

    name = _input_name(fp32)
    # one image per item, so subset_size counts images (NNCF iterates the data set item by item)
    dataset = nncf.Dataset(list(calib), lambda x: {name: x[None]})
    kwargs = {"preset": getattr(nncf.QuantizationPreset, preset)} if preset else {}
    model = nncf.quantize(onnx.load(fp32), dataset, subset_size=len(calib), **kwargs)
    onnx.save(model, out)
    return {"tool": "nncf", "version": nncf.__version__,
            "settings": {"preset": preset or "default (PERFORMANCE: symmetric activations)",
                         "subset_size": len(calib), "fast_bias_correction": "default (on)"}}


def quantize_nncf_mixed(fp32: str, calib: np.ndarray, out: str) -> dict:
    """NNCF with the MIXED preset: asymmetric (uint8) activations, the layout ONNX Runtime's x86 kernels favour."""
    return quantize_nncf(fp32, calib, out, "MIXED")


def quantize_modelopt(fp32: str, calib: np.ndarray, out: str) -> dict:
    """NVIDIA ModelOpt ONNX PTQ, INT8 max calibration, calibrated on the CPU execution provider."""
    import modelopt
    from modelopt.onnx.quantization import quantize

    # high_precision_dtype: ModelOpt's default casts the unquantized rest to FP16 for TensorRT; ONNX
    # Runtime's CPU provider has no fast FP16 kernels, so keep FP32 for a CPU comparison.
    settings = {"quantize_mode": "int8", "calibration_method": "max", "calibration_eps": ["cpu"],
                "high_precision_dtype": "fp32"}
    quantize(fp32, calibration_data={_input_name(fp32): calib}, output_path=out, **settings)
    return {"tool": "modelopt", "version": modelopt.__version__, "settings": settings}


PEERS = {"nncf": quantize_nncf, "nncf_mixed": quantize_nncf_mixed, "modelopt": quantize_modelopt}


def main(argv: list[str]) -> int:
    """Run one peer; the exit code and INFO.json tell the caller how it went."""
    peer, fp32, calib_path, out, info_path = argv
    calib = np.load(calib_path).astype(np.float32)
    t0 = time.perf_counter()
    info = PEERS[peer](fp32, calib, out)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    with open(info_path, "w") as f:
        json.dump(info, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
