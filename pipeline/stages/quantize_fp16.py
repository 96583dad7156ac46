"""The quantize stage's FP16 option (`quantize.precision: fp16`): convert, then verify like any INT8 candidate.

For a GPU or NPU that runs half precision better than INT8, or a budget INT8 cannot meet. The conversion is
`pipeline.build.fp16.to_fp16` (ONNX Runtime's converter, float32 graph inputs and outputs kept so callers feed
the same arrays); the result is scored against the FP32 ONNX with the same evaluator and budget the INT8 search
uses (top-1 accuracy/agreement, or the user's `eval:` score), and a model that misses it is never passed on.
The file keeps the stage's name, `model_int8.onnx`, so build, benchmark and the bundle read it unchanged;
`QuantizeMetrics.decision` and the manifest's `final.precision` say "fp16".
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import BudgetExceeded
from pipeline.stages.base import Artifact
from pipeline.stages.metrics import QuantizeMetrics


def fp16_file(fp32_onnx: Path, evaluator, target, cfg, workdir: Path, log=print,
              run_spec=None) -> Artifact:
    """Write `workdir/model_int8.onnx` as the FP16 conversion of `fp32_onnx`, verified against it.

    Args:
        fp32_onnx: the FP32 model.
        evaluator: a `pipeline.int8.evaluate` evaluator (ClassificationEvaluator or FunctionEvaluator) on
            held-out data: the FP32 model is bound as its reference, the FP16 model scored against it.
        target: the Target (its quantization scheme is recorded for the record's shape only).
        cfg: `QuantizeConfig` (max_accuracy_drop, min_top1_agreement).
        workdir: output folder.
        log: progress lines.
        run_spec: how both models run (`pipeline.int8.qdq.RunSpec`; default: CPU provider, all optimizations).
    Returns:
        Artifact with `model` = model_int8.onnx (FP16 weights and activations, float32 input/output);
        QuantizeMetrics with decision "fp16".
    Raises:
        BudgetExceeded: the FP16 model misses the budget (the numbers are in the message).
        UserError: the converter rejects the model.
    """
    import os
    import time

    from pipeline.build.fp16 import to_fp16
    from pipeline.int8.evaluate import Budget
    from pipeline.int8.qdq import RunSpec, predictor

    workdir.mkdir(parents=True, exist_ok=True)
    spec = run_spec or RunSpec()
    t0 = time.perf_counter()
    candidate = to_fp16(Path(fp32_onnx), workdir / "fp16_candidate.onnx", keep_io_types=True)
    budget = Budget(cfg.max_accuracy_drop, cfg.min_top1_agreement)
    ref = evaluator.bind_reference(predictor(Path(fp32_onnx), spec))
    got = evaluator.evaluate(predictor(candidate, spec))
    misses = budget.misses(ref, got)
    drop = round((ref.score - got.score) * 100, 2)
    log(f"[quantize] fp16: score {ref.score * 100:.2f}% -> {got.score * 100:.2f}% (drop {drop:.2f} points)"
        f"{'' if got.agreement is None else f', top-1 agreement {got.agreement * 100:.1f}%'}"
        f"{', max |fp16 - fp32| ' + format(got.max_abs_diff, '.3g') if got.max_abs_diff is not None else ''}")
    if misses:
        candidate.unlink(missing_ok=True)
        raise BudgetExceeded(f"quantize: the FP16 model of {Path(fp32_onnx).name} misses the budget: "
                             f"{'; '.join(misses)} (score {got.score * 100:.2f}% vs FP32 {ref.score * 100:.2f}%); "
                             "try a looser quantize.max_accuracy_drop / min_top1_agreement, or keep FP32")
    out = workdir / "model_int8.onnx"  # the name build, benchmark and the bundle read, whatever the precision
    os.replace(candidate, out)  # same folder: atomic, and the candidate was itself written atomically
    seconds = round(time.perf_counter() - t0, 2)
    attempt = {"label": "fp16 (onnxruntime float16 converter, float32 I/O)", "float_nodes": [], "step": "fp16",
               "meets": True, "misses": [], **got.to_dict(), "drop_pp": drop}
    return Artifact({"model": out}, "model", QuantizeMetrics(
        accuracy=got.accuracy if got.accuracy is not None else got.score,
        accuracy_fp32=ref.accuracy if ref.accuracy is not None else ref.score, drop_pp=drop,
        top1_agreement=got.agreement if got.agreement is not None else float("nan"),
        max_abs_diff=got.max_abs_diff if got.max_abs_diff is not None else float("nan"),
        excluded_nodes=[], attempts=[attempt], scheme=target.quantization, method="fp16", calibration_samples=0,
        file_bytes=out.stat().st_size, decision="fp16",
        reason="quantize.precision is fp16: converted and verified against the FP32 ONNX with the INT8 budget",
        search_seconds=seconds, search_timed_out=False))
