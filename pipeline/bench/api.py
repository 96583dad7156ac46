"""One call from a model path to a result document: open runner(s), make feeds, measure, fingerprint.

Used by `edgepipe bench MODEL`, the pytest plugin and benchmarks/run_suite.py.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from pipeline.bench.harness import BenchConfig, make_feeds, measure, measure_interleaved
from pipeline.errors import UserError
from pipeline.runtimes.base import RunnerOptions, open_runner


def open_model(model: str, runtime: Optional[str], options: RunnerOptions):
    """Create and open the runner for `model`, turning a missing runtime module into a UserError."""
    try:
        runner = open_runner(model, runtime, options)
    except ImportError as e:
        raise UserError(f"runtime {runtime or 'for ' + model!r} is not usable here: {e}") from None
    try:
        runner.open()
    except ImportError as e:
        raise UserError(f"runtime {runner.runtime!r} is not installed here: {e}") from None
    except RuntimeError as e:
        # TrtRunnerError (no TensorRT / no GPU / bad engine) and the like: the user's environment or file
        hint = ""
        if runner.runtime == "tensorrt":
            from pipeline.bench.trtexec import find_trtexec

            if find_trtexec() is not None:
                hint = f"; trtexec is installed: try `edgepipe bench trtexec {model}`"
        raise UserError(f"{runner.runtime} cannot run {model}: {e}{hint}") from None
    return runner


def bench_model(
    model: str,
    *,
    runtime: Optional[str] = None,
    threads: Optional[int] = None,
    providers: Optional[Sequence[str]] = None,
    device: str = "cpu",
    weights: Optional[str] = None,
    shapes: Optional[Mapping[Optional[str], Sequence[int]]] = None,
    batch: Optional[int] = None,
    cfg: Optional[BenchConfig] = None,
    reference: Optional[str] = None,
    runner_extra: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """Benchmark `model` (optionally interleaved with a `reference` model) and return the result doc.

    Args:
        model: .onnx, .engine/.plan, .pt2 or module:function.
        runtime: onnxruntime, tensorrt or pytorch (None: from the extension).
        threads, providers, device, weights: runner options.
        shapes: explicit input shapes (name -> dims; key None for the first input).
        batch: fills a dynamic batch dimension.
        cfg: warm-up / iterations.
        reference: a second model measured in alternating blocks with `model`, stored as
            `reference` so `compare` can normalise away machine drift.
        runner_extra: runtime-specific options (RunnerOptions.extra), e.g. {"transfers": "excluded"}
            for the TensorRT runner.
    Returns:
        The result document (`pipeline.bench.result`).
    """
    from pipeline.bench.fingerprint import fingerprint
    from pipeline.bench.result import make_result

    cfg = (cfg or BenchConfig(threads=threads)).validate()
    if cfg.threads is None:
        cfg.threads = threads
    extra: dict[str, Any] = dict(runner_extra or {})
    if weights:
        extra["weights"] = weights
    if shapes and None in shapes:
        extra["input_shape"] = tuple(shapes[None])
    opts = RunnerOptions(threads=threads, providers=list(providers) if providers else None, device=device, extra=extra)
    runners = {}
    try:
        runners["model"] = open_model(model, runtime, opts)
        feeds = {"model": make_feeds(runners["model"].inputs(), shapes, batch)}
        if reference:
            ref_opts = RunnerOptions(threads=threads, providers=opts.providers, device=device)
            runners["reference"] = open_model(reference, None, ref_opts)
            feeds["reference"] = make_feeds(runners["reference"].inputs(), None, batch)
            res = measure_interleaved(runners, feeds, cfg)
            stats, ref = res["model"], (reference, res["reference"])
        else:
            stats, ref = measure(runners["model"], feeds["model"], cfg), None
        info = runners["model"].describe()
    finally:
        for r in runners.values():
            r.close()
    config = {
        "warmup": cfg.warmup, "warmup_seconds": cfg.warmup_seconds, "iterations": cfg.iterations,
        "duration_s": cfg.duration_s, "threads": threads, "batch": batch, "interleaved_with_reference": bool(reference),
    }
    return make_result(
        stats, model=model, runtime=info.get("runtime"), runner_info=info, config=config,
        inputs={k: list(v.shape) for k, v in feeds["model"].items()}, fingerprint=fingerprint(threads),
        reference=ref,
    )
