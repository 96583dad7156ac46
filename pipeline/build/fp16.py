"""FP16 ONNX for GPUs and NPUs that run half precision better than INT8 (or when INT8 misses the accuracy budget).

The conversion is ONNX Runtime's maintained converter, `onnxruntime.transformers.float16.convert_float_to_float16`:
float initializers and activations become float16, with Cast nodes around the operators kept in float32 (its
DEFAULT_OP_BLOCK_LIST: operators ONNX Runtime has no float16 kernel for, plus any the caller adds). The caller
compares the result with the FP32 model numerically (the quantize stage does, with the config's tolerance).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import UserError
from pipeline.fileio import atomic_path


def to_fp16(fp32_onnx: Path, out_path: Path, keep_io_types: bool = True, block_ops: Iterable[str] = ()) -> Path:
    """Convert an FP32 ONNX model to FP16.

    Args:
        fp32_onnx: the FP32 model.
        out_path: where the FP16 model goes (written atomically).
        keep_io_types: keep graph inputs and outputs float32 (a Cast at each edge), so callers feed and read
            the same arrays as for the FP32 model.
        block_ops: extra operator types to keep in float32 (e.g. "Softmax" or "Sigmoid" of a detector head),
            added to the converter's default block list.
    Returns:
        out_path.
    Raises:
        UserError: a missing file, a model that is not float32, or one the converter or ONNX checker rejects.
    """
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    if not fp32_onnx.is_file():
        raise UserError(f"fp16: ONNX not found: {fp32_onnx}")
    if isinstance(block_ops, str):  # a lone "Softmax" would otherwise become seven one-letter op types
        raise UserError(f"fp16: block_ops = {block_ops!r} must be a list of operator types, e.g. [{block_ops!r}]")
    model = onnx.load(str(fp32_onnx))
    float32 = onnx.TensorProto.FLOAT
    if not any(t.data_type == float32 for t in model.graph.initializer) and not any(
            i.type.tensor_type.elem_type == float32 for i in model.graph.input):
        raise UserError(f"fp16: {fp32_onnx} has no float32 inputs or weights to convert (already FP16 or INT8?)")
    blocked = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(block_ops))
    try:
        fp16 = convert_float_to_float16(model, keep_io_types=keep_io_types, op_block_list=blocked)
        # the converter appends its input Casts at the end of the node list; ONNX wants topological order
        OnnxModel(fp16).topological_sort(is_deterministic=True)
        onnx.checker.check_model(fp16)
    except Exception as e:  # the converter asserts and onnx raises its own checker errors
        raise UserError(f"fp16: could not convert {fp32_onnx} to float16: {e}") from None
    with atomic_path(out_path) as tmp:
        onnx.save(fp16, str(tmp))
    return out_path


def initializer_dtypes(onnx_path: Path) -> dict[str, int]:
    """How many initializers of each element type a model holds ({"float16": 10, "float": 2}), for reports.

    Args:
        onnx_path: the model.
    Returns:
        Element type name -> count.
    """
    import onnx

    counts: dict[str, int] = {}
    for t in onnx.load(str(onnx_path), load_external_data=False).graph.initializer:
        name = onnx.TensorProto.DataType.Name(t.data_type).lower()
        counts[name] = counts.get(name, 0) + 1
    return counts
