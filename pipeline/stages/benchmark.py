"""Stage `benchmark`: latency of the teacher (FP32), the student (FP32) and the final INT8 model.

All three run in ONNX Runtime on this machine, interleaved in the same run (so drift, turbo and
neighbours hit them alike), at batch 1 and each larger batch the target or config names: warm-up,
then at least 200 timed runs each; p50/p90/p99 and throughput, with the threads used recorded.
For TensorRT targets these are host-CPU numbers; the device's own come from `edgepipe deploy --device`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.fileio import write_json
from pipeline.stages.base import Artifact, StageInputs

MODELS = (("teacher_fp32", "export", "teacher"), ("student_fp32", "export", "model"), ("final_int8", "quantize", "model"))


def run(inputs: StageInputs, cfg, workdir: Path) -> Artifact:
    """Produce `benchmark.json`.

    Args:
        inputs: needs `export` and `quantize`.
        cfg: `BenchmarkConfig` (warm-up, iterations, threads, batches).
        workdir: this stage's folder.
    Returns:
        Artifact with `results` = benchmark.json; metrics[model][batch] = latency stats.
    """
    from pipeline.bench.fingerprint import fingerprint
    from pipeline.bench.harness import BenchConfig
    from pipeline.bench.isolated import measure_onnx_interleaved
    from pipeline.onnx_utils import model_input_spec

    def input_name(path: str) -> str:
        return model_input_spec(path)["name"]

    d = inputs.data
    batches = cfg.batches or list(inputs.target.benchmark_batches)
    bcfg = BenchConfig(warmup=cfg.warmup, iterations=cfg.iterations, threads=cfg.threads)
    results: dict = {}
    pool = None
    paths = {label: str(inputs.artifact(stage).files[role]) for label, stage, role in MODELS}
    for batch in batches:
        x = np.ascontiguousarray(np.resize(d.test_x, (batch, *d.input_shape)), dtype=np.float32)
        feeds = {label: {input_name(path): x} for label, path in paths.items()}
        out = measure_onnx_interleaved(paths, feeds, bcfg, cfg.threads)
        stats, pool = out["stats"], out["thread_pool"]
        for label, s in stats.items():
            results.setdefault(label, {})[str(batch)] = s
        t, f = stats["teacher_fp32"], stats["final_int8"]
        inputs.log(
            f"[benchmark] batch {batch}: teacher p50 {t['p50']:.3f} ms, student {stats['student_fp32']['p50']:.3f} ms, "
            f"INT8 {f['p50']:.3f} ms ({t['p50'] / f['p50']:.1f}x faster than the teacher)"
        )
    env = fingerprint(threads=cfg.threads)
    doc = {"runtime": "onnxruntime", "device": "host CPU", "batches": batches, "results": results, "environment": env,
           "thread_pool": pool,
           "warmup": cfg.warmup, "iterations": cfg.iterations}
    path = write_json(workdir / "benchmark.json", doc)
    b1 = str(batches[0])
    summary = {label: {b: {k: v[k] for k in ("p50", "p90", "p99", "throughput_ips", "cv")} for b, v in per.items()}
               for label, per in results.items()}
    metrics = {"latency": summary, "batch": int(b1),
               "speedup_p50_vs_teacher": round(results["teacher_fp32"][b1]["p50"] / results["final_int8"][b1]["p50"], 2),
               "threads": env.get("threads_used", cfg.threads)}
    return Artifact({"results": path}, "results", metrics)
