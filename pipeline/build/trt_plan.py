"""Build planning for TensorRT: options, precision and network flags per version, the engine cache key,
and the summary of an engine's layers.

Pure decisions, no building: the `trt` module is a parameter, so they run against any TensorRT (or
tensorrt_rtx in CI). Copied into the deploy bundle beside `trt_builder.py`, so this file imports only
the standard library and stays Python 3.8-compatible.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional


class BuildError(RuntimeError):
    """The ONNX could not be parsed or the engine could not be built (message says which and why)."""


@dataclass
class BuildOptions:
    """What to build. Batch sizes fill the optimization profile of every input's dynamic axis 0."""

    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    workspace_mib: int = 1024
    fp16: bool = False
    sparse: bool = False  # SPARSE_WEIGHTS: a 2:4 model on a GPU with sparse tensor cores (recipe decides)
    dla_core: Optional[int] = None
    gpu_fallback: bool = True
    opt_level: Optional[int] = 3
    timing_cache: Optional[str] = None
    # (height, width) ranges for an NCHW input whose axes 2 and 3 are dynamic; None: the ONNX's fixed size
    min_hw: Optional[List[int]] = None
    opt_hw: Optional[List[int]] = None
    max_hw: Optional[List[int]] = None


def profile_shapes_for(name: str, dims: List[int], options: BuildOptions) -> Dict[str, List[int]]:
    """min/opt/max shapes of one input: a dynamic axis 0 from the batch range, dynamic axes 2 and 3 (height
    and width of an NCHW input) from the options' (height, width) ranges.

    Args:
        name: the input's name (for the message).
        dims: its shape, -1 (or None) where dynamic.
        options: the BuildOptions.
    Returns:
        {"min", "opt", "max": full shape}.
    Raises:
        BuildError: a dynamic axis the options give no range for.
    """
    out: Dict[str, List[int]] = {}
    for key in ("min", "opt", "max"):
        batch, hw = getattr(options, key + "_batch"), getattr(options, key + "_hw")
        shape = []
        for j, d in enumerate(dims):
            if d is not None and d >= 0:
                shape.append(int(d))
            elif j == 0:
                shape.append(int(batch))
            elif j in (2, 3) and len(dims) == 4 and hw:
                shape.append(int(hw[j - 2]))
            else:
                raise BuildError("input %r has shape %s: axis %d is dynamic and no range is given for it "
                                 "(allowed: a dynamic batch, and a dynamic height/width with min/opt/max sizes)"
                                 % (name, dims, j))
        out[key] = shape
    return out


def _member(enum: Any, name: str) -> Any:
    """An enum member if this TensorRT version has it, else None (version probing, never assuming)."""
    return getattr(enum, name, None)


def plan_precision(trt: Any, has_qdq: bool, fp16: bool, use_dla: bool) -> Dict[str, Any]:
    """Decide strong typing and precision flags from what this TensorRT offers.

    Args:
        trt: the TensorRT module (tensorrt, or tensorrt_rtx in CI).
        has_qdq: the ONNX holds QuantizeLinear/DequantizeLinear (explicit INT8).
        fp16: FP16 wanted for the layers that are not quantized.
        use_dla: building for a DLA core.
    Returns:
        {"strongly_typed": bool, "flags": [BuilderFlag names], "fp16_applied": bool, "notes": [str]}.
    """
    has_fp16_flag = _member(trt.BuilderFlag, "FP16") is not None
    has_int8_flag = _member(trt.BuilderFlag, "INT8") is not None
    has_strong = _member(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") is not None
    notes: List[str] = []
    flags: List[str] = []
    if not has_fp16_flag:
        # 11.x: weak typing is gone; the network is strongly typed whatever we pass.
        if fp16:
            notes.append(
                "FP16 requested but this TensorRT has no BuilderFlag.FP16 (removed in 11.0): FP16 must come "
                "from the ONNX's own tensor types (e.g. ModelOpt AutoCast); building with the ONNX's types"
            )
        if use_dla:
            notes.append("DLA runs FP16/INT8 only: layers the ONNX keeps in FP32 fall back to the GPU")
        return {"strongly_typed": True, "flags": flags, "fp16_applied": False, "notes": notes}
    if fp16 or use_dla:
        # Weak typing lets TensorRT choose FP16 for unquantized layers; DLA needs FP16/INT8 everywhere.
        flags.append("FP16")
        if has_qdq and has_int8_flag:
            flags.append("INT8")
        notes.append("weakly typed build: FP16 flag%s" % (" + INT8 flag for the Q/DQ graph" if "INT8" in flags else ""))
        return {"strongly_typed": False, "flags": flags, "fp16_applied": True, "notes": notes}
    if has_strong:
        notes.append("strongly typed build: precision follows the ONNX (Q/DQ -> INT8, rest FP32)")
        return {"strongly_typed": True, "flags": flags, "fp16_applied": False, "notes": notes}
    # TensorRT < 10 (e.g. 8.5 on Xavier): no strong typing; explicit Q/DQ still needs the INT8 flag.
    if has_qdq and has_int8_flag:
        flags.append("INT8")
    return {"strongly_typed": False, "flags": flags, "fp16_applied": False, "notes": notes}


def network_creation_flags(trt: Any, strongly_typed: bool) -> int:
    """Bit mask for builder.create_network: STRONGLY_TYPED where wanted and present.

    EXPLICIT_BATCH is never passed: ignored since 10.0 and removed in 11.0; before 10.0 it was required,
    so it is set only when the module still has it and has no strong typing (TensorRT 8.x).
    """
    mask = 0
    creation = trt.NetworkDefinitionCreationFlag
    strong = _member(creation, "STRONGLY_TYPED")
    if strongly_typed and strong is not None:
        mask |= 1 << int(strong)
    explicit = _member(creation, "EXPLICIT_BATCH")
    if explicit is not None and strong is None:
        mask |= 1 << int(explicit)
    return mask


def onnx_has_qdq(onnx_bytes: bytes) -> bool:
    """Whether the ONNX uses QuantizeLinear/DequantizeLinear (op types are plain strings in the protobuf).

    Decided before the network exists (strong typing is a creation flag) and without the onnx package,
    which the Jetson may not have.
    """
    return b"DequantizeLinear" in onnx_bytes or b"QuantizeLinear" in onnx_bytes


def cache_key(onnx_sha256: str, trt_version: str, device: Dict[str, Any], options: BuildOptions,
              shapes: Dict[str, Any]) -> str:
    """Engine cache key: ONNX bytes + TensorRT version + device (name, compute capability) + flags + shapes.

    An engine is only valid for the exact TensorRT version and GPU model it was built with.
    """
    opts = asdict(options)
    opts.pop("timing_cache", None)  # where the timing cache lives does not change the engine
    blob = json.dumps(
        {"onnx": onnx_sha256, "tensorrt": trt_version, "device": device, "options": opts, "shapes": shapes},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def summarize_layers(info: Any) -> Optional[Dict[str, Any]]:
    """Layer count, names and the DLA-run subgraphs from engine-inspector JSON.

    TensorRT fuses what runs on DLA into "ForeignNode" layers; everything else ran on the GPU.
    """
    if not isinstance(info, dict):
        return None if info is None else {"raw": str(info)[:2000]}
    # (not named `layer`: that name is reserved for trt.ILayer objects, see TRT_OBJECT_NAMES)
    records = info.get("Layers") or []
    names = [rec.get("Name", "") if isinstance(rec, dict) else str(rec) for rec in records]
    on_dla = [n for n, rec in zip(names, records)
              if "ForeignNode" in n or (isinstance(rec, dict) and "DLA" in str(rec.get("LayerType", "")))]
    return {"count": len(names), "names": names, "dla_subgraphs": on_dla}
