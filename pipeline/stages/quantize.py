"""Stage `quantize`: static INT8 post-training quantization to a QDQ ONNX with ONNX Runtime.

The scheme comes from the target (TensorRT: symmetric S8S8 with float biases; x86 CPUs without
VNNI: U8S8 with reduce_range). Accuracy on the held-out split is checked against
`max_accuracy_drop`; when it is missed and `fallback` is on, the most sensitive layers (the first
convolution, then the classifier) are kept in float and the model is quantized again. A model that
still misses the budget is never passed on: the stage fails.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pipeline.errors import BudgetExceeded
from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.metrics import QuantizeMetrics

_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def quantize_to_qdq(fp32_onnx: Path, out_path: Path, calib_x: np.ndarray, scheme, method: str = "minmax",
                    calib_samples: int = 256, nodes_to_exclude: Iterable[str] = ()) -> Path:
    """Quantize an FP32 ONNX model to INT8 QDQ with ONNX Runtime's static calibration.

    Args:
        fp32_onnx: the FP32 model (input "input", dynamic batch).
        out_path: destination (written atomically).
        calib_x: calibration images, NCHW float32 (the first `calib_samples` are used).
        scheme: a `pipeline.targets.QuantScheme` (types, per-channel, reduce_range, symmetry, bias).
        method: "minmax", "entropy" or "percentile".
        calib_samples: how many images calibrate activation ranges.
        nodes_to_exclude: node names kept in float.
    Returns:
        out_path.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from pipeline.fileio import atomic_path

    x = np.ascontiguousarray(calib_x[:calib_samples], dtype=np.float32)
    name = onnx.load(str(fp32_onnx), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{name: x[i : i + 16]} for i in range(0, len(x), 16)])

        def get_next(self):
            return next(self._it, None)

    qt = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    with atomic_path(out_path) as tmp:
        pre = tmp.with_suffix(".pre.onnx")
        # ONNX Runtime's histogram calibrators print progress to stdout, which `--json -` keeps for the manifest
        try:
            with contextlib.redirect_stdout(sys.stderr):
                # Shape inference + graph optimisation (BN folding) first, as ONNX Runtime recommends.
                quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
                quantize_static(
                    str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=scheme.per_channel,
                    reduce_range=scheme.reduce_range, activation_type=qt[scheme.activation_type],
                    weight_type=qt[scheme.weight_type], nodes_to_exclude=list(nodes_to_exclude),
                    calibrate_method=getattr(CalibrationMethod, _METHODS[method]),
                    extra_options={
                        "ActivationSymmetric": scheme.symmetric_activations,
                        "WeightSymmetric": scheme.symmetric_weights,
                        "QuantizeBias": scheme.quantize_bias,
                    },
                )
        finally:
            pre.unlink(missing_ok=True)
    return Path(out_path)


def sensitive_nodes(fp32_onnx: Path) -> list[list[str]]:
    """Fallback exclusion sets, in order: the first conv; then the first conv and the classifier."""
    import onnx

    nodes = onnx.load(str(fp32_onnx), load_external_data=False).graph.node
    weighted = [n.name for n in nodes if n.op_type in ("Conv", "Gemm", "MatMul")]
    if not weighted:
        return []
    sets = [[weighted[0]]]
    if len(weighted) > 1:
        sets.append([weighted[0], weighted[-1]])
    return sets


def run(inputs: StageInputs, cfg, workdir: Path) -> Artifact:
    """Produce `model_int8.onnx` (QDQ), checked against the FP32 ONNX on the held-out split.

    Args:
        inputs: needs `export`; the target gives the INT8 scheme.
        cfg: `QuantizeConfig`.
        workdir: this stage's folder.
    Returns:
        Artifact with `model` = model_int8.onnx; QuantizeMetrics: accuracy, drop, agreement, attempts.
    Raises:
        BudgetExceeded: every attempt lost more than `max_accuracy_drop` points.
    """
    from pipeline.onnx_utils import compare_stream, ort_session

    d, scheme = inputs.data, inputs.target.quantization
    fp32 = inputs.artifact("export").path
    ref_sess = ort_session(fp32)
    acc_fp32 = compare_stream(d.loader("test", 256), _runner(ref_sess), None)["accuracy_ref"]
    out = workdir / "model_int8.onnx"
    # Calibration draws `calibration_samples` training images only: the held-out split stays unseen.
    calib, _ = d.sample("train", cfg.calibration_samples, seed=inputs.config.seed)
    plans = [list(cfg.exclude_nodes)]
    if cfg.fallback:
        plans += [sorted(set(cfg.exclude_nodes) | set(s)) for s in sensitive_nodes(fp32)]
    attempts = []
    for excluded in plans:
        quantize_to_qdq(fp32, out, calib, scheme, cfg.method, cfg.calibration_samples, excluded)
        # the held-out split streamed through both models, one batch in memory
        res = compare_stream(d.loader("test", 256), _runner(ref_sess), _runner(ort_session(out)))
        acc = res["accuracy_new"]
        cmp = {k: res[k] for k in ("max_abs_diff", "top1_agreement", "samples")}
        drop = (acc_fp32 - acc) * 100
        attempts.append({"excluded": excluded, "accuracy": acc, "drop_pp": round(drop, 2), **cmp})
        inputs.log(
            f"[quantize] {scheme.activation_type[0].upper()}8{scheme.weight_type[0].upper()}8 "
            f"{'per-channel' if scheme.per_channel else 'per-tensor'}"
            f"{', float: ' + ', '.join(excluded) if excluded else ''}: accuracy {acc_fp32 * 100:.2f}% -> "
            f"{acc * 100:.2f}%, top-1 agreement {cmp['top1_agreement'] * 100:.1f}%"
        )
        if drop <= cfg.max_accuracy_drop and cmp["top1_agreement"] >= cfg.min_top1_agreement:
            metrics = QuantizeMetrics(
                accuracy=acc, accuracy_fp32=acc_fp32, drop_pp=round(drop, 2), top1_agreement=cmp["top1_agreement"],
                max_abs_diff=cmp["max_abs_diff"], excluded_nodes=excluded, attempts=attempts, scheme=scheme,
                method=cfg.method, calibration_samples=min(cfg.calibration_samples, len(calib)),
                file_bytes=out.stat().st_size)
            return Artifact({"model": out}, "model", metrics)
    out.unlink(missing_ok=True)
    best = max(attempts, key=lambda a: a["accuracy"])
    raise BudgetExceeded(
        f"quantize: INT8 accuracy {best['accuracy'] * 100:.2f}% is {best['drop_pp']:.2f} points below FP32 "
        f"{acc_fp32 * 100:.2f}% (quantize.max_accuracy_drop = {cfg.max_accuracy_drop}, top-1 agreement "
        f"{best['top1_agreement']:.3f} vs min {cfg.min_top1_agreement}) after {len(attempts)} attempt(s); "
        "try quantize.method: entropy, more calibration_samples, or quantize.exclude_nodes"
    )


def _runner(sess):
    """x -> logits through an ONNX Runtime session."""
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]
