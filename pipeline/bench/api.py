"""One call from a model path to a result document: open runtime(s), make feeds, measure, fingerprint.

Used by `edgepipe bench MODEL`, the pytest plugin and benchmarks/run_suite.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from pipeline.bench.harness import BenchConfig, make_feeds, measure, measure_interleaved
from pipeline.runtimes.base import Runtime, RuntimeFailure, RuntimeOptions, open_runtime


def open_model(stack: ExitStack, model: str, runtime: str | None, options: RuntimeOptions) -> Runtime:
    """Open the runtime for `model` inside `stack` (closed when the stack closes).

    Args:
        stack: the caller's ExitStack.
        model: .onnx, .engine/.plan, .pt2 or module:function.
        runtime: a runtime name or alias, or None to guess from the extension.
        options: the runtime's options.
    Returns:
        The opened runtime.
    Raises:
        RuntimeFailure: the runtime cannot run the model here; for a runtime that trtexec can time (a
            TensorRT engine), the message suggests `edgepipe bench trtexec` when trtexec is installed.
    """
    rt = open_runtime(model, runtime, options)
    try:
        return stack.enter_context(rt)
    except RuntimeFailure as e:
        if rt.supports_trtexec:
            from pipeline.bench.trtexec import find_trtexec

            if find_trtexec() is not None:
                raise RuntimeFailure(f"{e}; trtexec is installed: try `edgepipe bench trtexec {model}`") from None
        raise


def recorded_hw(model: str) -> list[int] | None:
    """The (height, width) a dynamic-size ONNX was exported at, as its metadata records it (None: not recorded)."""
    if not str(model).lower().endswith(".onnx"):
        return None
    from pathlib import Path

    from pipeline.onnx_utils import spatial_range

    try:
        rng = spatial_range(Path(model))
    except Exception:  # unreadable here: the runtime reports the real problem when it opens the file
        return None
    return rng["opt"] if rng else None


def bench_model(
    model: str,
    *,
    runtime: str | None = None,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    device: str = "cpu",
    weights: str | None = None,
    shapes: Mapping[str | None, Sequence[int]] | None = None,
    batch: int | None = None,
    cfg: BenchConfig | None = None,
    reference: str | None = None,
    transfers: str | None = None,
) -> dict[str, Any]:
    """Benchmark `model` (optionally interleaved with a `reference` model) and return the result doc.

    Args:
        model: .onnx, .engine/.plan, .pt2 or module:function.
        runtime: onnxruntime, tensorrt or pytorch, or an alias (ort, trt, torch, ...); None: from the extension.
        threads, providers, device, weights: runtime options.
        shapes: explicit input shapes (name -> dims; key None for the first input).
        batch: fills a dynamic batch dimension.
        cfg: warm-up / iterations.
        reference: a second model measured in alternating blocks with `model`, stored as
            `reference` so `compare` can normalise away machine drift.
        transfers: TensorRT: "included" or "excluded" host<->device copies in the device time
            (None: the runtime's default, included).
    Returns:
        The result document (`pipeline.bench.result`).
    """
    from pipeline.bench.fingerprint import fingerprint
    from pipeline.bench.result import make_result

    cfg = (cfg or BenchConfig(threads=threads)).validate()
    if cfg.threads is None:
        cfg.threads = threads
    plist = tuple(providers) if providers else None
    opts = RuntimeOptions(threads=threads, providers=plist, device=device, weights=weights or None,
                          input_shape=tuple(shapes[None]) if shapes and None in shapes else None,
                          transfers=transfers or "included")
    with ExitStack() as stack:
        rt = open_model(stack, model, runtime, opts)
        feeds = {"model": make_feeds(rt.inputs(), shapes, batch, default_hw=recorded_hw(model))}
        if reference:
            ref = open_model(stack, reference, None, RuntimeOptions(threads=threads, providers=plist, device=device))
            feeds["reference"] = make_feeds(ref.inputs(), None, batch, default_hw=recorded_hw(reference))
            res = measure_interleaved({"model": rt, "reference": ref}, feeds, cfg)
            stats, ref_stats = res["model"], (reference, res["reference"])
        else:
            stats, ref_stats = measure(rt, feeds["model"], cfg), None
        info = rt.describe()
    config = {
        "warmup": cfg.warmup, "warmup_seconds": cfg.warmup_seconds, "iterations": cfg.iterations,
        "duration_s": cfg.duration_s, "threads": threads, "batch": batch, "interleaved_with_reference": bool(reference),
    }
    return make_result(
        stats, model=model, runtime=info.get("runtime"), runtime_info=info, config=config,
        inputs={k: list(v.shape) for k, v in feeds["model"].items()}, fingerprint=fingerprint(threads),
        reference=ref_stats,
    )
