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
    q, bench = artifacts["quantize"], artifacts["benchmark"].metrics
    final, teacher = bench.at("final_int8"), bench.at("teacher_fp32")
    c, h, w = data.input_shape
    p = target.profile
    return {
        "path": str(q.path.relative_to(out)), "sha256": sha256_file(q.path),
        "input": {"name": "input", "shape": [p.opt_batch, c, h, w], "dtype": "float32", "layout": "NCHW",
                  "mean": data.mean, "std": data.std, "dynamic_batch": True,
                  "batch_range": [p.min_batch, p.max_batch], "preprocessing": data.description,
                  "preprocess": data.preprocess},
        "output": {"name": "logits", "shape": [p.opt_batch, data.num_classes], "dtype": "float32"},
        "accuracy": q.metrics.accuracy, "teacher_accuracy": artifacts["train_teacher"].metrics.accuracy,
        "latency_ms": {k: getattr(final, k) for k in PERCENTILES}, "latency_batch": bench.batch,
        "runtime": "onnxruntime", "latency_measured_on": "host CPU (ONNX Runtime)",
        "target_runtime": target.runtime, "latency_budget_ms": target.latency_budget_ms,
        "teacher_onnx": str(artifacts["export"].files["teacher"].relative_to(out)),
        "teacher_latency_ms": {k: getattr(teacher, k) for k in PERCENTILES},
        "eval_data": (eval_info or {}).get("path", "data/eval.npz"),
        "eval_samples": {k: v for k, v in (eval_info or {}).items() if k != "path"},
        "skipped_images": skipped_images(data),
        "report": str(artifacts["report"].path.relative_to(out)),
    }


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
