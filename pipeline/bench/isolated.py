"""Interleaved ONNX Runtime measurements in a process of their own, sharing one thread pool.

Several sessions in one process each keep an intra-op pool whose idle workers spin and steal the
cores from the session being timed (on 2 cores: teacher p90 9.2 ms instead of 1.2 ms). ONNX
Runtime's process-wide pool fixes that, but once set every later session in the process must use
it, so the measurement runs in a spawned child and the caller's process is left as it was.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any


def _child(models: dict[str, str], feeds: dict[str, dict[str, Any]], cfg: Any, options: Any) -> dict:
    import dataclasses

    from pipeline.bench.harness import measure_interleaved
    from pipeline.runtimes.base import RuntimeOptions, open_runtime

    options = dataclasses.replace(options or RuntimeOptions(), shared_thread_pool=True)
    with ExitStack() as stack:
        runtimes = {name: stack.enter_context(open_runtime(path, "onnxruntime", options))
                    for name, path in models.items()}
        stats = measure_interleaved(runtimes, feeds, cfg)
        pool = runtimes[next(iter(runtimes))].describe().get("thread_pool")
    return {"stats": {n: s.to_dict() for n, s in stats.items()}, "thread_pool": pool}


def measure_onnx_interleaved(models: dict[str, str], feeds: dict[str, dict[str, Any]], cfg: Any,
                             options: Any | None = None) -> dict:
    """Measure ONNX models interleaved (see `harness.measure_interleaved`) in a spawned process.

    Args:
        models: name -> .onnx path.
        feeds: name -> {input name: numpy array}.
        cfg: a `BenchConfig`.
        options: the sessions' `RuntimeOptions` (threads, providers, graph optimization level), e.g. a
            target's from `backend_for(target).host_runtime_options`; None: ONNX Runtime's defaults. The
            shared thread pool is always on in the child.
    Returns:
        {"stats": {name: LatencyStats.to_dict()}, "thread_pool": "shared" | "per-session"}.
    """
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_child, (models, feeds, cfg, options))
