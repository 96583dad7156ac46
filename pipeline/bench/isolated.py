"""Interleaved ONNX Runtime measurements in a process of their own, sharing one thread pool.

Several sessions in one process each keep an intra-op pool whose idle workers spin and steal the
cores from the session being timed (on 2 cores: teacher p90 9.2 ms instead of 1.2 ms). ONNX
Runtime's process-wide pool fixes that, but once set every later session in the process must use
it, so the measurement runs in a spawned child and the caller's process is left as it was.
"""

from __future__ import annotations

from typing import Any, Optional


def _child(models: dict[str, str], feeds: dict[str, dict[str, Any]], cfg: Any, threads: Optional[int]) -> dict:
    from pipeline.bench.harness import measure_interleaved
    from pipeline.runtimes.base import RunnerOptions, open_runner

    runners = {}
    try:
        for name, path in models.items():
            r = open_runner(path, "onnxruntime", RunnerOptions(threads=threads, extra={"shared_thread_pool": True}))
            r.open()
            runners[name] = r
        stats = measure_interleaved(runners, feeds, cfg)
        pool = runners[next(iter(runners))].describe().get("thread_pool")
    finally:
        for r in runners.values():
            r.close()
    return {"stats": {n: s.to_dict() for n, s in stats.items()}, "thread_pool": pool}


def measure_onnx_interleaved(models: dict[str, str], feeds: dict[str, dict[str, Any]], cfg: Any,
                             threads: Optional[int] = None) -> dict:
    """Measure ONNX models interleaved (see `harness.measure_interleaved`) in a spawned process.

    Args:
        models: name -> .onnx path.
        feeds: name -> {input name: numpy array}.
        cfg: a `BenchConfig`.
        threads: intra-op threads (None: ONNX Runtime's default).
    Returns:
        {"stats": {name: LatencyStats.to_dict()}, "thread_pool": "shared" | "per-session"}.
    """
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_child, (models, feeds, cfg, threads))
