"""How the device builds its TensorRT engine: builder arguments, the trtexec line, and the QDQ checks.

The engine must be built on the device (an engine runs only on the GPU model and TensorRT version it was
built with), so the bundle carries the recipe, not an engine. Both recipes come from the same
BuildOptions, and the trtexec line from the builder's own `trtexec_command` (which knows which flags each
TensorRT version has), so `trt_builder.py` and `build_trtexec.sh` build the same engine.
"""

from __future__ import annotations

import ast
import dataclasses
import shlex
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.targets import Target

ENGINE_NAME = "model_int8.engine"
TIMING_CACHE = "timing.cache"
BUILD_REPORT = "build_report.json"
TRTEXEC_DEFAULT = "/usr/src/tensorrt/bin/trtexec"  # where JetPack installs it (it is in no pip wheel)


def build_options(target: Target, input_spec: dict[str, Any], dla: bool = False) -> Any:
    """The builder's BuildOptions for `target`, as the host-side build stage makes them.

    Args:
        target: a TensorRT target.
        input_spec: the run manifest's `final.input` (name, shape, dynamic_batch).
        dla: the DLA variant: static batch (DLA wants static shapes), the target's DLA core, GPU fallback.
    Returns:
        pipeline.build.trt_builder.BuildOptions, with the timing cache as a path inside the bundle.
    """
    from pipeline.stages.build import build_options_for

    if target.tensorrt is None:
        raise UserError(f"target {target.name!r} has runtime {target.runtime!r}; only TensorRT targets build engines")
    spec = target.tensorrt
    opts = build_options_for(target, Path("."))  # timing cache: ./timing.cache, next to the engine on the device
    dla = dla or spec.use_dla
    if dla:
        opts = dataclasses.replace(opts, dla_core=spec.dla_core, gpu_fallback=spec.gpu_fallback)
    else:
        opts = dataclasses.replace(opts, dla_core=None)
    if dla or not input_spec.get("dynamic_batch", True):
        # DLA wants static shapes; a model exported without a dynamic batch has exactly one.
        b = opts.opt_batch if input_spec.get("dynamic_batch", True) else int(input_spec["shape"][0])
        opts = dataclasses.replace(opts, min_batch=b, opt_batch=b, max_batch=b)
    return opts


def trtexec_argv(target: Target, onnx_name: str, input_spec: dict[str, Any], dla: bool = False) -> list[str]:
    """The trtexec build command (argv, starting with "trtexec"), from the builder helper's trtexec_command,
    so the Python builder and the trtexec line build the same engine."""
    from pipeline.build.trtexec import trtexec_command

    opts = build_options(target, input_spec, dla)
    return list(trtexec_command(onnx_name, ENGINE_NAME, opts, target.tensorrt.tensorrt_version,
                                {input_spec["name"]: list(input_spec["shape"][1:])}, explicit_int8=True))


def builder_args(target: Target, onnx_name: str, input_spec: dict[str, Any], dla: bool = False) -> list[str]:
    """Arguments of the bundled `trt_builder.py` CLI for the same build (DLA variant: without --dla-core,
    which the device runner appends with the core it uses)."""
    o = build_options(target, input_spec, dla)
    args = ["--onnx", onnx_name, "--engine", ENGINE_NAME, "--min-batch", str(o.min_batch),
            "--opt-batch", str(o.opt_batch), "--max-batch", str(o.max_batch), "--workspace-mib", str(o.workspace_mib),
            "--report", BUILD_REPORT]
    if o.opt_level is not None:
        args += ["--opt-level", str(o.opt_level)]
    if o.fp16:
        args.append("--fp16")
    if o.sparse:
        args.append("--sparse")
    if o.timing_cache:
        args += ["--timing-cache", o.timing_cache]
    if o.dla_core is not None and o.gpu_fallback:
        args.append("--gpu-fallback")
    return args


def check_standalone(path: Path) -> None:
    """Refuse to ship a module that imports `pipeline` at module level without a fallback: the device
    has no edgepipe install, so `import trt_runner` would fail there.

    Raises:
        UserError: naming the file, the line and the import.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:  # imports inside functions or in a try/except ImportError are fine
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        bad = [n for n in names if n.split(".")[0] == "pipeline"]
        if bad:
            raise UserError(f"{path}:{node.lineno} imports {bad[0]} at module level; the bundle copy runs on a device "
                            "without edgepipe (guard it with try/except ImportError)")


def build_script(target: Target, argv: list[str], dla_argv: list[str] | None) -> str:
    """A POSIX sh script that runs trtexec from the bundle folder; DLA_CORE=k selects the DLA variant.

    Args:
        target: the TensorRT target (named in the script's comment).
        argv: trtexec_argv(...) for the GPU build.
        dla_argv: trtexec_argv(..., dla=True), or None when the GPU has no DLA.
    Returns:
        The script text.
    """
    lines = [
        "#!/bin/sh",
        f"# Build the TensorRT engine for target '{target.name}' on the device itself.",
        "# Usage: sh build_trtexec.sh            (GPU)",
        "#        TRTEXEC=/path/to/trtexec sh build_trtexec.sh",
    ]
    if dla_argv is not None:
        lines.append("#        DLA_CORE=0 sh build_trtexec.sh   (DLA core 0, GPU fallback for unsupported layers)")
    lines += [
        "set -eu",
        'cd "$(dirname "$0")"',
        f'TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo {TRTEXEC_DEFAULT})}}"',
    ]
    gpu = " ".join(shlex.quote(a) for a in argv[1:])
    if dla_argv is not None:
        dla = " ".join(shlex.quote(a) for a in dla_argv[1:] if not a.startswith("--useDLACore="))
        lines += [
            'if [ -n "${DLA_CORE:-}" ]; then',
            f'  exec "$TRTEXEC" {dla} "--useDLACore=$DLA_CORE"',
            "fi",
        ]
    lines.append(f'exec "$TRTEXEC" {gpu}')
    return "\n".join(lines) + "\n"


def check_qdq_for_tensorrt(onnx_path: Path) -> dict[str, int]:
    """Refuse an ONNX that TensorRT's explicit-quantization path cannot take.

    TensorRT wants symmetric signed INT8 (S8S8): every QuantizeLinear/DequantizeLinear zero point int8 and
    zero, and float biases (its parser rejects int32 bias DequantizeLinear).

    Args:
        onnx_path: the INT8 QDQ ONNX.
    Returns:
        Counts: {"quantize": n, "dequantize": m}.
    Raises:
        UserError: naming the node and what is wrong.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {t.name: t for t in model.graph.initializer}
    counts = {"quantize": 0, "dequantize": 0}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        counts["quantize" if node.op_type == "QuantizeLinear" else "dequantize"] += 1
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            if inits[node.input[0]].data_type == onnx.TensorProto.INT32:
                raise UserError(f"{onnx_path}: node {node.name!r} dequantizes an int32 bias; TensorRT's parser "
                                "rejects it (allowed: float biases, quantize_bias: false in the target)")
        x = inits.get(node.input[0])
        if node.op_type == "DequantizeLinear" and x is not None and x.data_type != onnx.TensorProto.INT8:
            raise UserError(f"{onnx_path}: node {node.name!r} dequantizes a "
                            f"{onnx.TensorProto.DataType.Name(x.data_type)} weight; TensorRT needs int8 weights")
        zp = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is None:
            if node.op_type == "QuantizeLinear":  # without a zero point ONNX quantizes to uint8
                raise UserError(f"{onnx_path}: node {node.name!r} has no zero point, so it quantizes to uint8; "
                                "TensorRT needs S8S8 (allowed: an int8 zero point of 0)")
            continue
        if zp.data_type != onnx.TensorProto.INT8:
            raise UserError(f"{onnx_path}: node {node.name!r} has a {onnx.TensorProto.DataType.Name(zp.data_type)} "
                            "zero point; TensorRT needs S8S8 (allowed: int8 activations and weights)")
        if np.any(numpy_helper.to_array(zp) != 0):
            raise UserError(f"{onnx_path}: node {node.name!r} has a non-zero zero point; TensorRT needs symmetric "
                            "INT8 (allowed: symmetric_activations and symmetric_weights true)")
    if counts["quantize"] == 0 and counts["dequantize"] == 0:
        raise UserError(f"{onnx_path} has no QuantizeLinear/DequantizeLinear nodes: not an INT8 QDQ model")
    return counts
