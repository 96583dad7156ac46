"""Building one QDQ candidate with ONNX Runtime's quantizer, and running any model for the evaluator.

`quantize_static` reads precomputed ranges through `calibration_cache_path` (see `calibrate.py`), so a
candidate costs the graph rewrite only, not another calibration pass.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ORT session config key: Q/DQ stay separate float ops (no fusion into int8 kernels), so a QDQ graph runs
# as fake-quant, the numerics TensorRT reproduces with its own int8 kernels (onnxruntime_session_options_
# config_keys.h: kOrtSessionOptionsDisableQuantQDQ).
DISABLE_QUANT_QDQ = "session.disable_quant_qdq"
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


@dataclass(frozen=True)
class RunSpec:
    """How candidates are executed for accuracy: the target's ORT settings, or fake-quant (TensorRT proxy)."""

    fake_quant: bool = False
    graph_optimization_level: str = "all"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int | None = None


def preprocess(fp32_onnx: Path, out: Path) -> Path:
    """ORT's recommended pre-quantization pass (shape inference, constant folding, BN and Pad folding)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with contextlib.redirect_stdout(io.StringIO()):
        quant_pre_process(str(fp32_onnx), str(out), skip_symbolic_shape=True)
    return out


def build_qdq(model: Path, out: Path, cache: Path, method, scheme, reduce_range: bool,
              exclude: Iterable[str] = ()) -> Path:
    """Quantize `model` to QDQ with the ranges in `cache`.

    Args:
        model: the pre-processed FP32 ONNX (possibly equalized / bias-corrected).
        out: destination.
        cache: ORT calibration cache (`ActivationStats.write_cache`).
        method: the ORT CalibrationMethod the cache was written with.
        scheme: `pipeline.targets.QuantScheme` (types, per-channel, symmetry, bias).
        reduce_range: 7-bit weights.
        exclude: node names kept in float.
    Returns:
        out.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    qt = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            str(model), str(out), None, quant_format=QuantFormat.QDQ, per_channel=scheme.per_channel,
            reduce_range=reduce_range, activation_type=qt[scheme.activation_type],
            weight_type=qt[scheme.weight_type], nodes_to_exclude=list(exclude), calibrate_method=method,
            calibration_cache_path=str(cache),
            extra_options={"ActivationSymmetric": scheme.symmetric_activations,
                           "WeightSymmetric": scheme.symmetric_weights, "QuantizeBias": scheme.quantize_bias},
        )
    return out


def session(path: Path, spec: RunSpec):
    """An ORT session for `path` run the way `spec` says."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if spec.threads:
        so.intra_op_num_threads = spec.threads
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[spec.graph_optimization_level])
    if spec.fake_quant:
        so.add_session_config_entry(DISABLE_QUANT_QDQ, "1")
    return ort.InferenceSession(str(path), so, providers=list(spec.providers))


def predictor(path: Path, spec: RunSpec):
    """`predict(x) -> list[np.ndarray]` (every output) through a session for `path`."""
    sess = session(path, spec)
    name = sess.get_inputs()[0].name

    def predict(x: np.ndarray) -> list:
        return sess.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})

    return predict


def input_name(path: Path) -> str:
    """The model's first graph input that is not an initializer."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    return next(i.name for i in g.input if i.name not in inits)


def weighted_nodes(path: Path) -> list[dict]:
    """Conv / Gemm / MatMul nodes with a constant weight, in graph order, with a cost estimate.

    Returns:
        [{"name", "op", "params", "macs"}]; macs = weight elements x output positions per image (from
        the shapes ORT's pre-processing inferred; 1 where unknown), a proxy for the node's run time.
    """
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name: i for i in m.graph.initializer}
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    out = []
    for n in m.graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul") or len(n.input) < 2 or n.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        dims = shapes.get(n.output[0], [])
        positions = int(np.prod([d for d in dims[2:] if d > 0])) if n.op_type == "Conv" and len(dims) > 2 else 1
        out.append({"name": n.name, "op": n.op_type, "params": int(w.size), "macs": int(w.size) * positions})
    return out
