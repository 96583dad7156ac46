"""The TensorRT build recipe, made in one place: options, the trtexec line, the trt_builder.py line, file names.

The build stage (on the host), the deploy bundle (`build_trtexec.sh` and the manifest's `build` section)
and the device runner (which runs what the manifest says) all take their commands from `tensorrt_recipe`,
so the Python builder and trtexec build the same engine under the same file names. Also here: the checks
that a model suits TensorRT's explicit quantization and that a module can ship standalone.
"""

from __future__ import annotations

import ast
import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.targets import Target

MODEL_NAME = "model_int8.onnx"  # the INT8 QDQ ONNX, as the quantize stage writes it and the bundle ships it
ENGINE_NAME = "model_int8.engine"
BUILD_REPORT = "build_report.json"
TIMING_CACHE = "timing.cache"
BUILDER_SCRIPT = "trt_builder.py"
TRTEXEC_SCRIPT = "build_trtexec.sh"
TRTEXEC_DEFAULT = "/usr/src/tensorrt/bin/trtexec"  # where JetPack installs it (it is in no pip wheel)


def build_options_for(target: Target, workdir: str | Path = ".", sparse_2_4: bool = False) -> Any:
    """BuildOptions from a TensorRT target (profile, workspace, FP16, sparsity, DLA, timing cache).

    Args:
        target: a TensorRT target.
        workdir: the folder the timing cache lives in ("." = next to the engine, where the build runs).
        sparse_2_4: the model's weights are 2:4 sparse (prune.sparsity "2:4"). TensorRT's sparse-weights
            flag is on only when they are AND the GPU has sparse tensor cores (`tensorrt.sparsity_2_4`).
    Returns:
        pipeline.build.trt_plan.BuildOptions.
    Raises:
        UserError: the target has no `tensorrt:` section.
    """
    from pipeline.build.trt_plan import BuildOptions

    spec = target.tensorrt
    if spec is None:
        raise UserError(f"target {target.name!r} has runtime {target.runtime!r}; only TensorRT targets build engines")
    return BuildOptions(
        min_batch=target.profile.min_batch, opt_batch=target.profile.opt_batch, max_batch=target.profile.max_batch,
        workspace_mib=spec.workspace_mib, fp16=spec.allow_fp16, sparse=sparse_2_4 and spec.sparsity_2_4,
        dla_core=spec.dla_core if spec.use_dla else None, gpu_fallback=spec.gpu_fallback,
        opt_level=spec.builder_optimization_level,
        timing_cache=str(Path(workdir) / TIMING_CACHE) if spec.timing_cache else None,
    )


@dataclass(frozen=True)
class BuildRecipe:
    """How to build one engine: options and both command lines, with paths relative to the build folder."""

    options: Any  # BuildOptions; timing_cache is TIMING_CACHE (relative) or None
    input_name: str
    input_dims: tuple[int, ...]  # the input's shape without the batch axis
    trtexec_argv: list[str]  # starts with "trtexec"
    builder_args: list[str]  # trt_builder.py's arguments, without --dla-core (a DLA variant gets its core later)
    onnx: str = MODEL_NAME
    engine: str = ENGINE_NAME
    report: str = BUILD_REPORT

    @property
    def python_args(self) -> list[str]:
        """trt_builder.py's arguments, with `--dla-core` when the options name a core."""
        core = self.options.dla_core
        return self.builder_args + (["--dla-core", str(core)] if core is not None else [])

    @property
    def device_command(self) -> list[str]:
        """The whole trt_builder.py command, run from the bundle folder."""
        return ["python3", BUILDER_SCRIPT, *self.python_args]

    def host_options(self, workdir: Path) -> Any:
        """The options for building in `workdir` here (the timing cache inside it)."""
        cache = str(Path(workdir) / TIMING_CACHE) if self.options.timing_cache else None
        return dataclasses.replace(self.options, timing_cache=cache)

    def profile_shapes(self) -> dict[str, dict[str, list[int]]]:
        """{input: {"min"|"opt"|"max": full shape}}, as the engine cache key records them (height and width
        from the options' ranges when the model's are dynamic)."""
        from pipeline.build.trt_plan import profile_shapes_for

        dims = [-1, *self.input_dims]
        if self.options.opt_hw and len(dims) == 4:
            dims[2:] = [-1, -1]
        return {self.input_name: profile_shapes_for(self.input_name, dims, self.options)}


def tensorrt_recipe(target: Target, input_spec: dict[str, Any], dla: bool = False, explicit_int8: bool = True,
                    onnx_name: str = MODEL_NAME, sparse_2_4: bool = False) -> BuildRecipe:
    """The recipe for `target`'s engine of a model with input `input_spec`.

    Args:
        target: a TensorRT target.
        input_spec: the model's input: {"name", "shape" (batch first), "dynamic_batch" (default True)}, as the
            run manifest's `final.input` records it.
        dla: the DLA variant: static batch (DLA wants static shapes), the target's DLA core, GPU fallback.
            A target with `use_dla` always gets it.
        explicit_int8: the ONNX holds Q/DQ nodes (trtexec < 11 then needs --int8).
        onnx_name: the ONNX file's name in the build folder.
        sparse_2_4: the model is 2:4 sparse (see `build_options_for`).
    Returns:
        The BuildRecipe.
    Raises:
        UserError: the target is not a TensorRT target.
    """
    opts = build_options_for(target, sparse_2_4=sparse_2_4)
    spec = target.tensorrt
    dla = dla or spec.use_dla
    opts = dataclasses.replace(opts, dla_core=spec.dla_core if dla else None)
    dynamic = input_spec.get("dynamic_batch", True)
    if dla or not dynamic:  # DLA wants static shapes; a model exported without a dynamic batch has exactly one
        b = opts.opt_batch if dynamic else int(input_spec["shape"][0])
        opts = dataclasses.replace(opts, min_batch=b, opt_batch=b, max_batch=b)
    from pipeline.build.trtexec import trtexec_build_argv

    dims = tuple(int(d) for d in input_spec["shape"][1:])
    hw = input_spec.get("spatial_range")
    if hw and not dla and len(dims) == 3:  # a dynamic height/width: the profile spans the range export checked
        opts = dataclasses.replace(opts, min_hw=list(hw["min"]), opt_hw=list(hw["opt"]), max_hw=list(hw["max"]))
        dims = (dims[0], *(int(v) for v in hw["opt"]))
    argv = trtexec_build_argv(onnx_name, ENGINE_NAME, opts, spec.tensorrt_version, {input_spec["name"]: list(dims)},
                              explicit_int8=explicit_int8)
    recipe = BuildRecipe(opts, input_spec["name"], dims, list(argv), _builder_args(opts, onnx_name), onnx=onnx_name)
    if opts.opt_hw:  # trtexec's shapes per profile point, height and width included
        shapes = recipe.profile_shapes()[input_spec["name"]]
        flags = {f"--{k}Shapes=": f"--{k}Shapes={input_spec['name']}:{'x'.join(map(str, shapes[k]))}"
                 for k in ("min", "opt", "max")}
        argv = [next((v for f, v in flags.items() if a.startswith(f)), a) for a in argv]
        recipe = dataclasses.replace(recipe, trtexec_argv=argv)
    return recipe


def _builder_args(o: Any, onnx_name: str) -> list[str]:
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
    if o.opt_hw:  # a dynamic height/width: its range, HxW
        for k in ("min", "opt", "max"):
            args += [f"--{k}-hw", "x".join(str(v) for v in getattr(o, f"{k}_hw"))]
    return args


def onnx_input_spec(onnx_path: Path) -> dict[str, Any]:
    """The input spec of an ONNX file (one input; the batch axis may be dynamic, and the height and width of
    an NCHW input when the export recorded the range it checked them at).

    Args:
        onnx_path: the model.
    Returns:
        {"name", "shape" (batch first; 1 where dynamic; the recorded opt height/width), "dynamic_batch",
        "spatial_range" ({"min", "opt", "max": [h, w]} or None)}.
    Raises:
        UserError: more than one input, or a dynamic axis other than the batch without a recorded range.
    """
    import onnx

    from pipeline.onnx_utils import spatial_range

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UserError(f"{onnx_path}: {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); the TensorRT "
                        "recipe builds models with exactly one input")
    inp = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim]
    hw = spatial_range(onnx_path) if len(dims) == 4 and min(dims[2:]) < 1 and dims[1] >= 1 else None
    if hw:
        dims[2:] = hw["opt"]
    if not dims or any(d < 1 for d in dims[1:]):
        raise UserError(f"{onnx_path}: input {inp.name!r} has dynamic dims {dims}; only the batch axis may be, and "
                        "the height/width of a model edgepipe exported (it records the range it checked)")
    return {"name": inp.name, "shape": [max(dims[0], 1), *dims[1:]], "dynamic_batch": dims[0] < 1,
            "spatial_range": hw}


def check_standalone(path: Path) -> None:
    """Refuse to ship a module that imports `pipeline` at module level without a fallback: the device
    has no edgepipe install, so `import trt_runtime` would fail there.

    Args:
        path: the module to ship.

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
        argv: the GPU build's trtexec argv (`BuildRecipe.trtexec_argv`).
        dla_argv: the DLA variant's (`tensorrt_recipe(..., dla=True)`), or None when the GPU has no DLA.
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
        x = inits.get(node.input[0])
        if node.op_type == "DequantizeLinear" and x is not None and x.data_type == onnx.TensorProto.INT32:
            raise UserError(f"{onnx_path}: node {node.name!r} dequantizes an int32 bias; TensorRT's parser "
                            "rejects it (allowed: float biases, quantize_bias: false in the target)")
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
