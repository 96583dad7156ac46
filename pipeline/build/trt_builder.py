"""Build a TensorRT engine from an ONNX file, probing what the installed TensorRT offers.

Also copied verbatim into the deploy bundle and run ON the Jetson (Python >= 3.8, numpy, TensorRT):
it imports only the standard library at top level, TensorRT inside functions, and has a CLI:

    python3 trt_builder.py --onnx model.onnx --engine model.engine --min-batch 1 --opt-batch 1 \\
        --max-batch 8 --workspace-mib 1024 [--dla-core 0 --gpu-fallback] [--fp16] [--sparse] \\
        [--timing-cache F] [--opt-level 3] --report build.json

Version policy (nothing removed in a version we target is touched without a hasattr probe):
- INT8 is explicit only: Q/DQ nodes in the ONNX. No calibrator API is used (gone in 11.0).
- 11.x: every network is strongly typed; BuilderFlag.FP16/INT8 no longer exist, so FP16 can only come
  from the ONNX's own tensor types (e.g. ModelOpt AutoCast). `fp16=True` is then reported as not applied.
- 10.x: strongly typed (STRONGLY_TYPED creation flag) unless FP16 or DLA is wanted: those need the weakly
  typed FP16 flag (plus INT8 when the graph has Q/DQ), which strong typing forbids.
- DLA (`dla_core`): default device DLA, chosen core, GPU_FALLBACK when allowed; the report lists which
  layers DLA can run (config.can_run_on_DLA) and which fall back to the GPU.
The `trt` module is a parameter everywhere, so CI can drive the same code with `tensorrt_rtx` on a CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

# TensorRT objects are always held in variables with these names. tests/tensorrt/test_api_surface.py
# maps them to TensorRT classes and checks every attribute used on them against NVIDIA's real bindings.
TRT_OBJECT_NAMES = {
    "builder": "Builder",
    "network": "INetworkDefinition",
    "parser": "OnnxParser",
    "config": "IBuilderConfig",
    "profile": "IOptimizationProfile",
    "cache": "ITimingCache",
    "layer": "ILayer",
    "tensor": "ITensor",
    "runtime": "Runtime",
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
    "inspector": "EngineInspector",  # the Python class name (C++: IEngineInspector)
}


try:  # inside the edgepipe package (names re-exported: callers import them from here)
    from pipeline.build.trt_plan import (
        BuildError,
        BuildOptions,
        _member,
        cache_key,
        network_creation_flags,
        onnx_has_qdq,
        plan_precision,
        profile_shapes_for,
        summarize_layers,
    )
except ImportError:  # in a deploy bundle on the device: trt_plan.py sits beside this file
    from trt_plan import (  # type: ignore[no-redef]
        BuildError,
        BuildOptions,
        _member,
        cache_key,
        network_creation_flags,
        onnx_has_qdq,
        plan_precision,
        profile_shapes_for,
        summarize_layers,
    )


def import_tensorrt() -> Any:
    """Import the real TensorRT module (raises ImportError with the reason if absent)."""
    import tensorrt

    return tensorrt


def _atomic_write(path: str, data: bytes) -> None:
    # Same contract as pipeline.fileio (not importable on the device): temp file, fsync, rename.
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cuda_device_info() -> Dict[str, Any]:
    """Name and compute capability of CUDA device 0 via cuda-python or pycuda; {} when neither works."""
    try:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return {"name": name.strip("\x00"), "compute_capability": "%d.%d" % (props.major, props.minor)}
    except Exception:  # no cuda-python, no driver, no device: try the next probe
        pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        dev = cuda.Device(0)
        major, minor = dev.compute_capability()
        return {"name": dev.name(), "compute_capability": "%d.%d" % (major, minor)}
    except Exception:  # no pycuda, no driver, no device
        return {}


def _profile_shapes(network: Any, options: BuildOptions) -> Dict[str, Dict[str, List[int]]]:
    """min/opt/max shapes per input: a dynamic batch from the options' batch range, a dynamic height/width from
    their (height, width) ranges (`trt_plan.profile_shapes_for`); any other dynamic axis is a BuildError."""
    return {network.get_input(i).name: profile_shapes_for(network.get_input(i).name,
                                                          list(network.get_input(i).shape), options)
            for i in range(network.num_inputs)}


def _dla_layer_report(trt: Any, network: Any, config: Any) -> Dict[str, List[str]]:
    on_dla: List[str] = []
    on_gpu: List[str] = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        (on_dla if config.can_run_on_DLA(layer) else on_gpu).append(layer.name)
    return {"layers_on_dla": on_dla, "layers_on_gpu": on_gpu}


def build_engine(
    onnx_path: str,
    engine_path: str,
    options: BuildOptions,
    trt: Any = None,
    device: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Parse `onnx_path`, build with `options`, write the serialized engine to `engine_path`.

    Args:
        onnx_path: FP32 or QDQ ONNX with (optionally) a dynamic batch axis.
        engine_path: where the engine is written (atomically).
        options: shapes, workspace, precision, DLA, sparsity, timing cache, optimization level.
        trt: TensorRT module; default `import tensorrt`.
        device: {"name", "compute_capability"} for the report/key; default probed with cuda_device_info().
    Returns:
        A JSON-able report: versions, flags, shapes, DLA layer placement, timing cache, seconds, cache key.
    Raises:
        BuildError: parse errors (each ONNX node error listed), bad shapes, DLA absent, build failure.
    """
    trt = trt if trt is not None else import_tensorrt()
    device = device if device is not None else cuda_device_info()
    t0 = time.perf_counter()
    with open(onnx_path, "rb") as f:
        onnx_bytes = f.read()
    has_qdq = onnx_has_qdq(onnx_bytes)
    use_dla = options.dla_core is not None
    plan = plan_precision(trt, has_qdq, options.fp16, use_dla)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_creation_flags(trt, plan["strongly_typed"]))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.path.abspath(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise BuildError("TensorRT's ONNX parser rejected %s: %s" % (onnx_path, "; ".join(errors) or "no detail"))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
    shapes = _profile_shapes(network, options)
    profile = builder.create_optimization_profile()
    for name, s in shapes.items():
        profile.set_shape(name, s["min"], s["opt"], s["max"])
    config.add_optimization_profile(profile)

    flags = list(plan["flags"])
    if options.sparse:
        flags.append("SPARSE_WEIGHTS")
    dla: Optional[Dict[str, Any]] = None
    if use_dla:
        if builder.num_DLA_cores <= int(options.dla_core):
            raise BuildError(
                "dla_core = %s but this device has %d DLA cores" % (options.dla_core, builder.num_DLA_cores)
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(options.dla_core)
        if options.gpu_fallback:
            flags.append("GPU_FALLBACK")
        dla = {"core": int(options.dla_core), "gpu_fallback": bool(options.gpu_fallback)}
        dla.update(_dla_layer_report(trt, network, config))
    for name in flags:
        flag = _member(trt.BuilderFlag, name)
        if flag is None:
            raise BuildError("BuilderFlag.%s does not exist in TensorRT %s" % (name, trt.__version__))
        config.set_flag(flag)
    if options.opt_level is not None and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = int(options.opt_level)
    if device:
        # Detailed layer records let the engine inspector show what each layer became (and where DLA ran).
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED

    cache_info = _load_timing_cache(config, options.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError("TensorRT could not build %s (see the TensorRT log above)" % onnx_path)
    engine_bytes = bytes(memoryview(serialized))
    _atomic_write(engine_path, engine_bytes)
    _save_timing_cache(config, options.timing_cache, cache_info)
    engine_layers = None
    if device:  # deserializing needs a GPU; tensorrt_rtx on a CPU has none
        try:
            engine_layers = summarize_layers(inspect_engine(trt, engine_bytes, options.dla_core))
        except Exception as e:  # the inspector is a report, never a reason to fail a build
            engine_layers = {"error": str(e)}

    trt_version = str(trt.__version__)
    return {
        "onnx": os.path.abspath(onnx_path),
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "engine": os.path.abspath(engine_path),
        "engine_bytes": len(engine_bytes),
        "tensorrt_module": getattr(trt, "__name__", "tensorrt"),
        "tensorrt_version": trt_version,
        "device": device,
        "explicit_int8_qdq": has_qdq,
        "strongly_typed": plan["strongly_typed"],
        "fp16_applied": plan["fp16_applied"],
        "flags": flags,
        "precision_notes": plan["notes"],
        "shapes": shapes,
        "workspace_mib": int(options.workspace_mib),
        "builder_optimization_level": options.opt_level,
        "dla": dla,
        "timing_cache": cache_info,
        "engine_layers": engine_layers,
        "num_layers": network.num_layers,
        "build_seconds": round(time.perf_counter() - t0, 3),
        "cache_key": cache_key(hashlib.sha256(onnx_bytes).hexdigest(), trt_version, device, options, shapes),
    }


def _load_timing_cache(config: Any, path: Optional[str]) -> Optional[Dict[str, Any]]:
    if not path:
        return None
    data = b""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            data = f.read()
    cache = config.create_timing_cache(data)
    # ignore_mismatch=False: a cache from another device/version is rejected rather than misused.
    config.set_timing_cache(cache, False)
    return {"path": os.path.abspath(path), "loaded_bytes": len(data)}


def _save_timing_cache(config: Any, path: Optional[str], info: Optional[Dict[str, Any]]) -> None:
    if not path or info is None:
        return
    cache = config.get_timing_cache()
    if cache is None:
        return
    data = bytes(memoryview(cache.serialize()))
    _atomic_write(path, data)
    info["saved_bytes"] = len(data)


def inspect_engine(trt: Any, engine_bytes: bytes, dla_core: Optional[int] = None) -> Optional[Any]:
    """Per-layer engine information (JSON) from the engine inspector; needs a GPU. None if unavailable."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    if dla_core is not None:
        runtime.DLA_core = int(dla_core)  # must be set before deserializing a DLA engine
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        return None
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="trt_builder.py", description="Build a TensorRT engine from ONNX.")
    p.add_argument("--onnx", required=True)
    p.add_argument("--engine", required=True)
    p.add_argument("--min-batch", type=int, default=1)
    p.add_argument("--opt-batch", type=int, default=1)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--workspace-mib", type=int, default=1024)
    p.add_argument("--dla-core", type=int, default=None)
    p.add_argument("--gpu-fallback", action="store_true")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--sparse", action="store_true")
    p.add_argument("--timing-cache", default=None)
    p.add_argument("--opt-level", type=int, default=3)
    p.add_argument("--report", default=None, help="write the build report (JSON) here")
    for k in ("min", "opt", "max"):  # a dynamic height/width (NCHW axes 2, 3): its profile sizes
        p.add_argument("--%s-hw" % k, type=_hw, default=None, metavar="HxW")
    args = p.parse_args(argv)
    given = [args.min_hw, args.opt_hw, args.max_hw]
    if any(given) and not all(given):
        p.error("give all of --min-hw, --opt-hw and --max-hw, or none")
    if all(given) and not all(args.min_hw[i] <= args.opt_hw[i] <= args.max_hw[i] for i in (0, 1)):
        p.error("need --min-hw <= --opt-hw <= --max-hw in both height and width")
    if not (1 <= args.min_batch <= args.opt_batch <= args.max_batch):
        p.error("need 1 <= --min-batch <= --opt-batch <= --max-batch")
    if not (0 <= args.opt_level <= 5):
        p.error("--opt-level must be 0..5")
    return args


def _hw(text: str) -> List[int]:
    """"224x224" -> [224, 224]."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("%r: allowed: HEIGHTxWIDTH, e.g. 224x224" % text) from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError("%r: height and width must be >= 1" % text)
    return [h, w]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: 0 built, 2 bad arguments/ONNX, 3 TensorRT missing."""
    args = _parse_args(argv)
    options = BuildOptions(
        min_batch=args.min_batch, opt_batch=args.opt_batch, max_batch=args.max_batch,
        workspace_mib=args.workspace_mib, fp16=args.fp16, sparse=args.sparse, dla_core=args.dla_core,
        gpu_fallback=args.gpu_fallback, opt_level=args.opt_level, timing_cache=args.timing_cache,
        min_hw=args.min_hw, opt_hw=args.opt_hw, max_hw=args.max_hw,
    )
    try:
        trt = import_tensorrt()
    except ImportError as e:
        print("trt_builder: TensorRT is not importable: %s" % e, file=sys.stderr)
        return 3
    try:
        report = build_engine(args.onnx, args.engine, options, trt=trt)
    except (BuildError, OSError) as e:
        print("trt_builder: %s" % e, file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    if args.report:
        _atomic_write(args.report, (text + "\n").encode("utf-8"))
    print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
