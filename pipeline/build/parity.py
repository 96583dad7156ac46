"""Parity of a built engine against ONNX Runtime on the same inputs (max abs diff, top-1 agreement).

The numbers go into the build stage's metrics in the manifest, so a TensorRT engine that silently
diverges from the ONNX it came from (a parser bug, a bad fusion, FP16 overflow) is visible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def compare_outputs(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Compare two output batches of the same shape.

    Args:
        reference: ONNX Runtime's output, shape (N, ...); class scores on the last axis for top-1.
        candidate: the engine's output for the same inputs.
    Returns:
        {"samples", "max_abs_diff", "mean_abs_diff", "top1_agreement"} (agreement in [0, 1]).
    Raises:
        ValueError: the shapes differ.
    """
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if ref.shape != got.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape} vs candidate {got.shape}")
    diff = np.abs(ref - got)
    flat_ref = ref.reshape(ref.shape[0], -1) if ref.ndim > 1 else ref.reshape(1, -1)
    flat_got = got.reshape(flat_ref.shape)
    agree = float(np.mean(np.argmax(flat_ref, axis=1) == np.argmax(flat_got, axis=1)))
    return {
        "samples": int(flat_ref.shape[0]),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "top1_agreement": agree,
    }


def ort_outputs(onnx_path: str, x: np.ndarray, input_name: str | None = None) -> np.ndarray:
    """First output of `onnx_path` under ONNX Runtime's CPU provider for input batch `x`.

    Args:
        onnx_path: the ONNX model.
        x: the input batch (cast to float32).
        input_name: the input to feed (default: the model's first input).
    Returns:
        The first output as a numpy array.
    Raises:
        RuntimeFailure: onnxruntime is missing or cannot load the model.
    """
    from pipeline.runtimes.base import RuntimeOptions, open_runtime

    with open_runtime(str(onnx_path), "onnxruntime", RuntimeOptions(providers=("CPUExecutionProvider",))) as rt:
        name = input_name or rt.inputs()[0].name
        return np.asarray(rt.infer({name: np.ascontiguousarray(x, dtype=np.float32)})[0])


def parity_vs_ort(
    onnx_path: str,
    x: np.ndarray,
    run_candidate: Callable[[np.ndarray], np.ndarray],
    max_batch: int,
    input_name: str | None = None,
) -> dict[str, Any]:
    """Run ORT and a candidate (e.g. a TensorRT engine) on `x` in chunks of `max_batch`; compare.

    Args:
        onnx_path: the ONNX the engine was built from.
        x: inputs (N, ...) float32.
        run_candidate: batch -> first output, e.g. `lambda b: rt.infer({"input": b})[0]` for a TrtRuntime.
        max_batch: the engine profile's max batch (chunks never exceed it).
        input_name: ONNX input name (default: the first input).
    Returns:
        compare_outputs(...) plus {"reference": "onnxruntime-cpu"}.
    """
    ref = ort_outputs(onnx_path, x, input_name)
    chunks = [np.asarray(run_candidate(x[i : i + max_batch])) for i in range(0, len(x), max_batch)]
    result = compare_outputs(ref, np.concatenate(chunks, axis=0))
    result["reference"] = "onnxruntime-cpu"
    return result
