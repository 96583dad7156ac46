"""The run's final record (`manifest.json`'s `final`): the model to ship, its input and output, its numbers.

Read from the stages' typed metrics, so the run loop never looks inside a stage's results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.fileio import sha256_file
from pipeline.stages.base import Artifact

PERCENTILES = ("p50", "p90", "p99")


def final_record(artifacts: dict[str, Artifact], out: Path, data: Any, target: Any) -> dict[str, Any]:
    """The final model's record, with paths relative to the run folder.

    Args:
        artifacts: every stage's artifact, by stage name.
        out: the run folder.
        data: the DataSplits (input shape, classes, normalisation).
        target: the Target (batch profile, runtime, latency budget).
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
                  "batch_range": [p.min_batch, p.max_batch], "preprocessing": data.description},
        "output": {"name": "logits", "shape": [p.opt_batch, data.num_classes], "dtype": "float32"},
        "accuracy": q.metrics.accuracy, "teacher_accuracy": artifacts["train_teacher"].metrics.accuracy,
        "latency_ms": {k: getattr(final, k) for k in PERCENTILES}, "latency_batch": bench.batch,
        "runtime": "onnxruntime", "latency_measured_on": "host CPU (ONNX Runtime)",
        "target_runtime": target.runtime, "latency_budget_ms": target.latency_budget_ms,
        "teacher_onnx": str(artifacts["export"].files["teacher"].relative_to(out)),
        "teacher_latency_ms": {k: getattr(teacher, k) for k in PERCENTILES},
        "eval_data": "data/eval.npz", "report": str(artifacts["report"].path.relative_to(out)),
    }
