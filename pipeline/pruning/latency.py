"""Measured latency of candidate models: export to ONNX, time on ONNX Runtime's CPU provider.

The timing loop is `edgepipe bench`'s own (`pipeline.bench.harness.measure_interleaved`): the candidate
and the unpruned reference run in alternating blocks in this process, so a noisy, shared CPU slows both
alike and their p50 ratio stays meaningful. One intra-op thread by default: what one core buys, without
the thread pool's scheduling noise.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass(frozen=True)
class Timing:
    """Interleaved latencies (ms) of a reference and a candidate, measured side by side: p50 and minimum.

    On a shared host, preemption only ever adds time and hits a long inference more often than a short one,
    which inflates p50 ratios; the minimum is what each model costs when it runs undisturbed, as on a
    dedicated device. The budget search decides on the minima and records both.
    """

    reference_ms: float
    candidate_ms: float
    reference_min_ms: float
    candidate_min_ms: float

    @property
    def speedup(self) -> float:
        """reference p50 / candidate p50."""
        return self.reference_ms / max(self.candidate_ms, 1e-9)

    @property
    def speedup_min(self) -> float:
        """reference minimum / candidate minimum."""
        return self.reference_min_ms / max(self.candidate_min_ms, 1e-9)


def export_bytes(model: Any, input_shape: tuple[int, ...], opset: int = 17) -> bytes:
    """The model as ONNX bytes (batch 1, TorchScript exporter, module scopes kept in node names).

    Args:
        model: an nn.Module (put in eval mode here).
        input_shape: (C, H, W).
        opset: ONNX opset.
    Returns:
        The serialized ModelProto.
    """
    import io

    import torch

    model.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(1, *input_shape),), buf, dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset)
    return buf.getvalue()


def measure_pair(reference: bytes, candidate: bytes, input_shape: tuple[int, ...], threads: int = 1,
                 iterations: int = 100, warmup: int = 10, rounds: int = 20) -> Timing:
    """p50 latency of two ONNX models at batch 1, interleaved on ONNX Runtime's CPU provider.

    Args:
        reference: the unpruned model's ONNX bytes.
        candidate: the candidate's ONNX bytes.
        input_shape: (C, H, W).
        threads: intra-op threads.
        iterations: timed runs per model.
        warmup: untimed runs per model first.
        rounds: alternating blocks (the order rotates every round).
    Returns:
        Timing (p50 and minimum ms of each).
    """
    import numpy as np

    from pipeline.bench.harness import BenchConfig, measure_interleaved
    from pipeline.runtimes.base import RuntimeOptions
    from pipeline.runtimes.ort import OrtRuntime

    x = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
    opts = RuntimeOptions(threads=threads, providers=("CPUExecutionProvider",))
    with tempfile.TemporaryDirectory(prefix="edgepipe-prune-") as tmp:
        paths = {}
        for name, data in (("reference", reference), ("candidate", candidate)):
            paths[name] = Path(tmp) / f"{name}.onnx"
            paths[name].write_bytes(data)
        with OrtRuntime(paths["reference"], opts) as ref, OrtRuntime(paths["candidate"], opts) as cand:
            stats = measure_interleaved({"reference": ref, "candidate": cand},
                                        {"reference": {INPUT_NAME: x}, "candidate": {INPUT_NAME: x}},
                                        BenchConfig(warmup=warmup, iterations=iterations, threads=threads),
                                        rounds=rounds)
    ref, cand = stats["reference"], stats["candidate"]
    return Timing(float(ref.p50), float(cand.p50), float(ref.min), float(cand.min))


def measure_many(models: dict[str, bytes], input_shape: tuple[int, ...], threads: int = 1, iterations: int = 200,
                 warmup: int = 20, rounds: int = 20) -> dict[str, Any]:
    """Interleaved latency stats of several ONNX models in one process (the benchmarks' final numbers).

    Args:
        models: name -> ONNX bytes.
        input_shape: (C, H, W).
        threads: intra-op threads.
        iterations: timed runs per model.
        warmup: untimed runs per model.
        rounds: alternating blocks.
    Returns:
        name -> pipeline.bench.stats.LatencyStats.
    """
    import contextlib

    import numpy as np

    from pipeline.bench.harness import BenchConfig, measure_interleaved
    from pipeline.runtimes.base import RuntimeOptions
    from pipeline.runtimes.ort import OrtRuntime

    x = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
    opts = RuntimeOptions(threads=threads, providers=("CPUExecutionProvider",))
    with tempfile.TemporaryDirectory(prefix="edgepipe-prune-") as tmp, contextlib.ExitStack() as stack:
        runtimes = {}
        for name, data in models.items():
            path = Path(tmp) / f"m{len(runtimes)}.onnx"
            path.write_bytes(data)
            runtimes[name] = stack.enter_context(OrtRuntime(path, opts))
        return measure_interleaved(runtimes, {n: {INPUT_NAME: x} for n in runtimes},
                                   BenchConfig(warmup=warmup, iterations=iterations, threads=threads), rounds=rounds)
