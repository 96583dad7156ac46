"""The run's final record (`manifest.json`'s `final`): the model to ship, its input and output, its numbers.

Read from the stages' typed metrics, so the run loop never looks inside a stage's results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.fileio import sha256_file
from pipeline.stages.base import Artifact

PERCENTILES = ("p50", "p90", "p99")


def final_record(artifacts: dict[str, Artifact], out: Path, data: Any, target: Any,
                 eval_info: dict | None = None) -> dict[str, Any]:
    """The final model's record, with paths relative to the run folder.

    Args:
        artifacts: every stage's artifact, by stage name.
        out: the run folder.
        data: the run's `Data` (input shape, classes, normalisation, preprocessing).
        target: the Target (batch profile, runtime, latency budget).
        eval_info: what `data/eval.npz` holds ({path, samples, of}).
    Returns:
        The JSON-able `final` section of the run manifest.
    """
    q, precision = final_model(artifacts)
    bench = artifacts["benchmark"].metrics
    final, teacher = bench.at("final_int8"), bench.at("teacher_fp32")
    c, h, w = data.input_shape
    p = target.profile
    from pipeline.onnx_utils import model_input_spec, model_output_specs

    # the model's own names: a plain torch.onnx.export file may call its input "x" and have several outputs
    in_name = model_input_spec(q.path)["name"] if q.path.suffix == ".onnx" else "input"
    outputs = model_output_specs(q.path) if q.path.suffix == ".onnx" else []
    teacher_onnx = artifacts["export"].files.get("teacher") if "export" in artifacts else None
    trained = artifacts.get("train_teacher")
    return {
        "path": str(q.path.relative_to(out)), "sha256": sha256_file(q.path), "precision": precision,
        "input": {"name": in_name, "shape": [p.opt_batch, c, h, w], "dtype": "float32", "layout": "NCHW",
                  "mean": data.mean, "std": data.std, "dynamic_batch": True,
                  "batch_range": [p.min_batch, p.max_batch], "preprocessing": data.description,
                  "preprocess": data.preprocess},
        "output": _output(outputs, p.opt_batch, data.num_classes),
        "outputs": [{"name": o["name"], "shape": o["shape"], "dtype": o["elem_type"].lower()} for o in outputs],
        "accuracy": getattr(q.metrics, "accuracy", None),
        "teacher_accuracy": trained.metrics.accuracy if trained is not None else None,
        "latency_ms": {k: getattr(final, k) for k in PERCENTILES}, "latency_batch": bench.batch,
        "runtime": "onnxruntime", "latency_measured_on": "host CPU (ONNX Runtime)",
        "target_runtime": target.runtime, "latency_budget_ms": target.latency_budget_ms,
        "teacher_onnx": str(teacher_onnx.relative_to(out)) if teacher_onnx is not None else None,
        "teacher_latency_ms": {k: getattr(teacher, k) for k in PERCENTILES} if teacher is not None else None,
        "eval_data": (eval_info or {}).get("path", "data/eval.npz"),
        "eval_samples": {k: v for k, v in (eval_info or {}).items() if k != "path"},
        "skipped_images": skipped_images(data),
        "report": str(artifacts["report"].path.relative_to(out)),
    }


def final_model(artifacts: dict[str, Artifact]) -> tuple[Artifact, str]:
    """The model the run ships: the quantized one, else (quantize skipped) the FP32 ONNX that was exported or
    given as `model: {onnx: ...}`.

    Args:
        artifacts: every stage's artifact by stage name, plus the run's sources (`source:onnx`).
    Returns:
        (its artifact, "int8", "fp16" (`quantize.precision: fp16`) or "fp32").
    Raises:
        KeyError: no stage produced an ONNX model (a run always has export or an ONNX source).
    """
    if "quantize" in artifacts:
        q = artifacts["quantize"]
        decision = getattr(q.metrics, "decision", None)  # the search may ship FP32 when INT8 is not faster
        return q, decision if decision in ("fp16", "fp32") else "int8"
    for name in ("export", "source:onnx"):
        if name in artifacts:
            return artifacts[name], "fp32"
    raise KeyError("no ONNX model in this run: neither quantize, export nor model: {onnx: ...}")


def _output(outputs: list[dict], batch: int, num_classes: int) -> dict:
    """The one output record older readers take: class logits for a classifier, else the model's first output
    (all of them are in `outputs`)."""
    if len(outputs) == 1 and len(outputs[0]["shape"]) == 2:
        return {"name": outputs[0]["name"], "shape": [batch, num_classes], "dtype": "float32"}
    if outputs:
        first = outputs[0]
        return {"name": first["name"], "shape": [batch, *first["shape"][1:]], "dtype": first["elem_type"].lower()}
    return {"name": "logits", "shape": [batch, num_classes], "dtype": "float32"}


def skipped_images(data: Any) -> dict:
    """Unreadable image files left out under `skip_corrupt`, per split: {split: {count, first}} (empty: none)."""
    out = {}
    seen = set()
    for split, ds in list(getattr(data, "splits", {}).items()) + list(getattr(data, "train_sets", {}).items()):
        target = getattr(ds, "dataset", ds)
        if id(target) in seen or not hasattr(target, "skipped"):
            continue
        seen.add(id(target))
        bad = list(target.skipped)
        if bad:
            prev = out.get(split, {"count": 0, "files": []})
            files = sorted(set(prev["files"]) | set(bad))
            out[split] = {"count": len(files), "files": files[:20]}
    return out
