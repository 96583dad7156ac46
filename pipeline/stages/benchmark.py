"""Stage `benchmark`: latency of the teacher (FP32), the student (FP32) and the final INT8 model.

All three run in ONNX Runtime on this machine, interleaved in the same run (so drift, turbo and
neighbours hit them alike), at batch 1 and each larger batch the target or config names: warm-up,
then at least 200 timed runs each; p50/p90/p99 and throughput, with the threads used recorded.
The sessions use the target backend's host settings (for ONNX Runtime targets, the target's
`onnxruntime:` section: threads, graph optimizations, the execution providers present here).
For TensorRT targets these are host-CPU numbers; the device's own come from `edgepipe deploy --device`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fileio import write_json
from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.metrics import BenchmarkMetrics, LatencySummary

MODELS = (("teacher_fp32", "export", "teacher"), ("student_fp32", "export", "model"),
          ("final_int8", "quantize", "model"))
SUMMARY = ("p50", "p90", "p99", "throughput_ips", "cv")


def run(inputs: StageInputs, cfg: Any, workdir: Path) -> Artifact:
    """Produce `benchmark.json`.

    Args:
        inputs: needs `export` and `quantize`.
        cfg: `BenchmarkConfig` (warm-up, iterations, threads, batches).
        workdir: this stage's folder.
    Returns:
        Artifact with `results` = benchmark.json; BenchmarkMetrics (latency per model and batch).
    """
    from pipeline.backends import backend_for
    from pipeline.bench.fingerprint import fingerprint
    from pipeline.bench.harness import BenchConfig
    from pipeline.bench.isolated import measure_onnx_interleaved
    from pipeline.onnx_utils import model_input_spec

    d = inputs.data
    batches = cfg.batches or list(inputs.target.benchmark_batches)
    options = backend_for(inputs.target).host_runtime_options(inputs.target, cfg.threads)
    bcfg = BenchConfig(warmup=cfg.warmup, iterations=cfg.iterations, threads=options.threads)
    results: dict = {}
    pool = None
    paths, same_as = model_paths(inputs)
    names = {label: model_input_spec(path)["name"] for label, path in paths.items()}
    for batch in batches:
        x = np.ascontiguousarray(np.resize(d.sample("test", batch)[0], (batch, *d.input_shape)), dtype=np.float32)
        out = measure_onnx_interleaved(paths, {label: {names[label]: x} for label in paths}, bcfg, options)
        stats, pool = out["stats"], out["thread_pool"]
        stats.update({label: stats[other] for label, other in same_as.items()})
        for label, s in stats.items():
            results.setdefault(label, {})[str(batch)] = s
        inputs.log(f"[benchmark] batch {batch}: " + ", ".join(
            f"{label} p50 {s['p50']:.3f} ms" for label, s in stats.items() if label not in same_as))
    env = fingerprint(threads=options.threads)
    doc = {"runtime": "onnxruntime", "device": "host CPU", "batches": batches, "results": results, "environment": env,
           "thread_pool": pool, "session": {"threads": options.threads, "providers": options.providers,
                                            "graph_optimization_level": options.graph_optimization_level},
           "warmup": cfg.warmup, "iterations": cfg.iterations}
    path = write_json(workdir / "benchmark.json", doc)
    b1 = str(batches[0])
    latency = {label: {b: LatencySummary(**{k: v[k] for k in SUMMARY}) for b, v in per.items()}
               for label, per in results.items()}
    ref = results.get("teacher_fp32", results["student_fp32"])  # without a teacher: the FP32 model given
    metrics = BenchmarkMetrics(
        latency=latency, batch=int(b1), threads=env.get("threads_used", options.threads),
        speedup_p50_vs_teacher=round(ref[b1]["p50"] / results["final_int8"][b1]["p50"], 2))
    return Artifact({"results": path}, "results", metrics)


def model_paths(inputs: StageInputs) -> tuple[dict[str, str], dict[str, str]]:
    """The ONNX files to time, by label, each file once.

    Skipped stages leave gaps and repeats: an ONNX `model:` has no teacher; `quantize.enabled: false` makes
    the final model the FP32 student; a `model:` that is not pruned is its own teacher. A file named twice is
    timed once and its numbers recorded under both labels (`final_int8` keeps its name: it is the final model,
    whatever its precision; the manifest's `final.precision` says which).

    Args:
        inputs: needs `export` (or the ONNX source standing in for it) and `quantize` (or its stand-in).
    Returns:
        ({label: path} to time, {label: label whose numbers it shares}).
    """
    from pipeline.fileio import sha256_file

    paths, same_as, seen = {}, {}, {}
    for label, stage, role in MODELS:
        art = inputs.artifacts.get(stage)
        if art is None or role not in art.files:
            continue
        path = str(art.files[role])
        digest = sha256_file(path)
        if digest in seen:
            same_as[label] = seen[digest]
        else:
            paths[label], seen[digest] = path, label
    return paths, same_as

