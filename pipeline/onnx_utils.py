"""ONNX helpers: export from torch, check, simplify, run with ONNX Runtime, compare outputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.fileio import atomic_path

INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(model: Any, input_shape: tuple[int, ...], path: Path, opset: int, dynamo: bool, simplify: bool,
                output_names: Sequence[str] | None = None, dynamic_hw: bool = False) -> dict:
    """Export `model` to ONNX with a dynamic batch axis, run onnx.checker, optionally simplify (onnxslim).

    Args:
        model: nn.Module in eval mode, returning one tensor or a tuple of tensors.
        input_shape: (C, H, W).
        path: destination `.onnx` (written atomically).
        opset: ONNX opset.
        dynamo: use torch's dynamo exporter (needs onnxscript) instead of the TorchScript one.
        simplify: run onnxslim.
        output_names: one name per output (default: "logits" for a single output).
        dynamic_hw: also make the input's height and width (axes 2, 3) dynamic.
    Returns:
        {"nodes_before", "nodes_after", "opset", "simplified"}.
    """
    import onnx
    import torch

    model.eval()
    example = torch.zeros(1, *input_shape)
    with atomic_path(path) as tmp:
        names = list(output_names or [OUTPUT_NAME])
        kwargs = dict(input_names=[INPUT_NAME], output_names=names, opset_version=opset)
        if dynamo:
            axes = {0: torch.export.Dim("batch", min=1)}
            if dynamic_hw:  # min 8: smaller inputs vanish in a few stride-2 layers
                axes.update({2: torch.export.Dim("height", min=8), 3: torch.export.Dim("width", min=8)})
            kwargs["dynamic_shapes"] = (axes,)
        else:
            inp = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
            kwargs["dynamic_axes"] = {INPUT_NAME: inp, **{n: {0: "batch"} for n in names}}
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
    return ort_outputs(path_or_session, x, batch_size)[0]


def ort_outputs(path_or_session: Any, x: np.ndarray, batch_size: int = 64) -> list[np.ndarray]:
    """Run an ONNX model over `x` in batches and return every output (in the model's order), batches joined."""
    sess = ort_session(path_or_session) if isinstance(path_or_session, (str, Path)) else path_or_session
    name = sess.get_inputs()[0].name
    runs = [sess.run(None, {name: x[i : i + batch_size]}) for i in range(0, len(x), batch_size)]
    return [np.concatenate([r[k] for r in runs]) for k in range(len(runs[0]))] if runs else []


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


def compare_outputs(ref: Sequence[np.ndarray], new: Sequence[np.ndarray], names: Sequence[str] | None = None) -> dict:
    """Compare every output of two models run on the same inputs.

    Args:
        ref: the reference outputs (e.g. PyTorch's), one array per output.
        new: the outputs under test, in the same order.
        names: the outputs' names (default: output_0, output_1, ...).
    Returns:
        {"max_abs_diff" (over all outputs), "top1_agreement" (of the first output when it is (N, classes)
        logits, else None), "samples", "outputs": {name: {"max_abs_diff", "shape"}}}.
    Raises:
        UserError: the two models give a different number of outputs or different shapes.
    """
    names = list(names or [f"output_{i}" for i in range(len(ref))])
    if len(ref) != len(new) or len(names) != len(ref):
        raise UserError(f"the models give {len(ref)} and {len(new)} outputs ({len(names)} names): they must match")
    per = {}
    for n, r, g in zip(names, ref, new, strict=True):
        if r.shape != g.shape:
            raise UserError(f"output {n!r}: shape {list(g.shape)} differs from the reference's {list(r.shape)}")
        per[n] = {"max_abs_diff": float(np.abs(r.astype(np.float64) - g).max()) if r.size else 0.0,
                  "shape": [int(d) for d in r.shape]}
    first = ref[0] if len(ref) else np.zeros((0, 0))
    logits = first.ndim == 2 and first.shape[1] > 1  # only class logits have a top-1 to agree on
    return {
        "max_abs_diff": max((p["max_abs_diff"] for p in per.values()), default=0.0),
        "top1_agreement": compare_logits(first, new[0])["top1_agreement"] if logits else None,
        "samples": int(len(first)),
        "outputs": per,
    }


def model_output_specs(path: Path) -> list[dict]:
    """Name, shape (dynamic dims as strings) and element type of each of the model's outputs, in order."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return [{"name": o.name, "shape": [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim],
             "elem_type": onnx.TensorProto.DataType.Name(o.type.tensor_type.elem_type)} for o in m.graph.output]


SPATIAL_KEY = "edgepipe.spatial_range"  # ONNX metadata: the input heights/widths verified at export


def set_spatial_range(path: Path, ranges: dict[str, list[int]]) -> None:
    """Record in the ONNX file the (height, width) range a dynamic-size model was checked at.

    Args:
        path: the ONNX file (rewritten atomically).
        ranges: {"min", "opt", "max": [height, width]}; engines' shape profiles and benchmarks read it.
    """
    import json

    import onnx

    m = onnx.load(str(path))
    kept = [p for p in m.metadata_props if p.key != SPATIAL_KEY]
    del m.metadata_props[:]
    m.metadata_props.extend(kept)
    m.metadata_props.add(key=SPATIAL_KEY, value=json.dumps({k: [int(v) for v in ranges[k]]
                                                            for k in ("min", "opt", "max")}))
    with atomic_path(path) as tmp:
        onnx.save(m, str(tmp))


def spatial_range(path: Path) -> dict[str, list[int]] | None:
    """The (height, width) range recorded by `set_spatial_range`, or None (static size, or not recorded)."""
    import json

    import onnx

    m = onnx.load(str(path), load_external_data=False)
    for p in m.metadata_props:
        if p.key == SPATIAL_KEY:
            return json.loads(p.value)
    return None


def model_input_spec(path: Path) -> dict:
    """Name, shape (dynamic dims as strings) and element type of the model's first input."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inp = m.graph.input[0]
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    elem_type = onnx.TensorProto.DataType.Name(inp.type.tensor_type.elem_type)
    return {"name": inp.name, "shape": dims, "elem_type": elem_type}
