"""ONNX helpers: export from torch, check, simplify, run with ONNX Runtime, compare outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.fileio import atomic_path

INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(model: Any, input_shape: tuple[int, ...], path: Path, opset: int, dynamo: bool, simplify: bool) -> dict:
    """Export `model` to ONNX with a dynamic batch axis, run onnx.checker, optionally simplify (onnxslim).

    Args:
        model: nn.Module in eval mode.
        input_shape: (C, H, W).
        path: destination `.onnx` (written atomically).
        opset: ONNX opset.
        dynamo: use torch's dynamo exporter (needs onnxscript) instead of the TorchScript one.
        simplify: run onnxslim.
    Returns:
        {"nodes_before", "nodes_after", "opset", "simplified"}.
    """
    import onnx
    import torch

    model.eval()
    example = torch.zeros(1, *input_shape)
    with atomic_path(path) as tmp:
        kwargs = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
        if dynamo:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1)},)
        else:
            kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            try:
                torch.onnx.export(model, (example,), str(tmp), dynamo=dynamo, **kwargs)
            except Exception as e:  # an op the exporter cannot express, data-dependent control flow, ...
                other = "export.dynamo: true (needs onnxscript)" if not dynamo else "export.dynamo: false"
                raise UserError(
                    f"export: torch.onnx.export failed for {type(model).__name__} at opset {opset} "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:300]}); try another export.opset or {other}"
                ) from None
        m = onnx.load(str(tmp))
        nodes_before = len(m.graph.node)
        if simplify:
            import onnxslim

            m = onnxslim.slim(m)
        onnx.checker.check_model(m, full_check=True)
        onnx.save(m, str(tmp))
    return {"nodes_before": nodes_before, "nodes_after": len(m.graph.node), "opset": opset, "simplified": simplify}


def ort_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session (full graph optimisation)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise UserError(f"ONNX Runtime cannot load {path}: {e}") from None


def ort_logits(path_or_session: Any, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Run an ONNX model over `x` in batches and return the first output."""
    sess = ort_session(path_or_session) if isinstance(path_or_session, (str, Path)) else path_or_session
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(outs)


def compare_stream(batches: Any, ref: Any, new: Any) -> dict:
    """Compare two models batch by batch over a stream of labeled images (memory: one batch).

    Args:
        batches: iterable of `(x, y[, ...])` batches (numpy arrays or torch tensors; y < 0 = unlabeled).
        ref: callable x (numpy float32 NCHW) -> logits (numpy), e.g. the FP32 model.
        new: the same for the model under test, or None to measure `ref` alone.
    Returns:
        {"accuracy_ref", "accuracy_new", "max_abs_diff", "top1_agreement", "samples"} (the `new` keys only
        when `new` is given); accuracies over the labeled images.
    """
    n = labeled = correct_ref = correct_new = agree = 0
    max_diff = 0.0
    for batch in batches:
        x = np.ascontiguousarray(_numpy(batch[0]), dtype=np.float32)
        y = _numpy(batch[1]).astype(np.int64)
        r = np.asarray(ref(x))
        lab = y >= 0
        n, labeled = n + len(x), labeled + int(lab.sum())
        correct_ref += int((r.argmax(1) == y)[lab].sum())
        if new is not None:
            g = np.asarray(new(x))
            correct_new += int((g.argmax(1) == y)[lab].sum())
            agree += int((r.argmax(1) == g.argmax(1)).sum())
            if r.size:
                max_diff = max(max_diff, float(np.abs(r.astype(np.float64) - g).max()))
    out = {"accuracy_ref": correct_ref / labeled if labeled else 0.0, "samples": n}
    if new is not None:
        out.update(accuracy_new=correct_new / labeled if labeled else 0.0, max_abs_diff=max_diff,
                   top1_agreement=agree / n if n else 1.0)
    return out


def _numpy(v: Any) -> np.ndarray:
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)


def compare_logits(ref: np.ndarray, new: np.ndarray) -> dict:
    """Max |new - ref| and top-1 agreement between two sets of logits."""
    return {
        "max_abs_diff": float(np.abs(ref.astype(np.float64) - new).max()) if ref.size else 0.0,
        "top1_agreement": float((ref.argmax(1) == new.argmax(1)).mean()) if len(ref) else 1.0,
        "samples": int(len(ref)),
    }


def model_input_spec(path: Path) -> dict:
    """Name, shape (dynamic dims as strings) and element type of the model's first input."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inp = m.graph.input[0]
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    elem_type = onnx.TensorProto.DataType.Name(inp.type.tensor_type.elem_type)
    return {"name": inp.name, "shape": dims, "elem_type": elem_type}
