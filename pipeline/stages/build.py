"""Pipeline stage `build`: turn the final ONNX into a TensorRT engine for TensorRT targets.

    run(inputs: StageInputs, cfg: None, workdir: Path) -> Artifact      (the runner's stage protocol)
    build_for_target(onnx_path: Path, target: Target, workdir: Path, calib_x: np.ndarray | None = None,
                     force: bool = False) -> dict                       (the same, without the runner)

build_for_target returns {"status": "done" | "cached" | "skipped", "reason": str | None,
"artifact": {"path": Path} | None, "metrics": {...}, "trtexec": [argv] | None}:
- onnxruntime targets: "skipped" (nothing to build: ONNX Runtime serves the ONNX as is).
- tensorrt targets, TensorRT + a CUDA GPU here: the engine is built (or reused: its file name carries the
  cache key = ONNX sha256 + TensorRT version + device + flags + shapes), then compared with ONNX Runtime on
  `calib_x` (parity: max abs diff, top-1 agreement) under metrics["parity"].
- tensorrt targets without TensorRT or a GPU: "skipped" with the reason, plus the `trtexec` argv and the
  `trt_builder.py` command to build on the device (metrics["device_build_command"]).
run() builds the quantize stage's QDQ ONNX, checks parity on the first PARITY_SAMPLES test images, and
always writes workdir/build_report.json (the primary file when nothing was built; the engine otherwise).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.fileio import sha256_file, write_json
from pipeline.targets import Target

PARITY_SAMPLES = 64


def build_options_for(target: Target, workdir: Path) -> Any:
    """BuildOptions from a TensorRT target (profile, workspace, FP16, sparsity, DLA, timing cache)."""
    from pipeline.build.trt_builder import BuildOptions

    spec = target.tensorrt
    if spec is None:
        raise UserError(f"target {target.name} has no 'tensorrt:' section")
    return BuildOptions(
        min_batch=target.profile.min_batch,
        opt_batch=target.profile.opt_batch,
        max_batch=target.profile.max_batch,
        workspace_mib=spec.workspace_mib,
        fp16=spec.allow_fp16,
        sparse=spec.sparse_weights,
        dla_core=spec.dla_core if spec.use_dla else None,
        gpu_fallback=spec.gpu_fallback,
        opt_level=spec.builder_optimization_level,
        timing_cache=str(workdir / "timing.cache") if spec.timing_cache else None,
    )


def onnx_input_shapes(onnx_path: Path) -> dict[str, list[int]]:
    """Input name -> shape without the batch axis, from the ONNX graph (initializers excluded)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    shapes = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim]
        if any(d < 1 for d in dims[1:]):
            raise UserError(f"{onnx_path}: input {inp.name!r} has dynamic dims {dims}; only the batch axis may be")
        shapes[inp.name] = dims[1:]
    return shapes


def tensorrt_here() -> tuple[Any, dict[str, Any], str | None]:
    """(tensorrt module or None, CUDA device info, reason it cannot build here or None)."""
    from pipeline.build.trt_builder import cuda_device_info

    try:
        import tensorrt as trt
    except ImportError as e:
        return None, {}, f"TensorRT is not installed here ({e})"
    device = cuda_device_info()
    if not device:
        return trt, {}, "no CUDA GPU visible through cuda-python or pycuda"
    return trt, device, None


def cache_environment(target: Target) -> dict[str, Any]:
    """What an engine depends on beyond the ONNX and the target: TensorRT version and GPU.

    The runner adds this to the build stage's cache key, so a TensorRT upgrade or another GPU
    rebuilds the engine instead of reusing one that cannot run here.
    """
    if target.runtime != "tensorrt":
        return {}
    trt, device, reason = tensorrt_here()
    return {"tensorrt": getattr(trt, "__version__", None), "device": device, "reason": reason}


def build_for_target(
    onnx_path: Path, target: Target, workdir: Path, calib_x: np.ndarray | None = None, force: bool = False
) -> dict[str, Any]:
    """Build (or reuse, or explain why not) the TensorRT engine of `onnx_path` for `target`.

    Args:
        onnx_path: the final ONNX (QDQ S8S8 with float biases for TensorRT targets).
        target: validated target.
        workdir: the run's build/ folder.
        calib_x: sample inputs (N, C, H, W) float32 for parity vs ONNX Runtime; None skips parity.
        force: rebuild even if an engine with the same cache key exists.
    Returns:
        The stage result described in the module docstring.
    """
    onnx_path, workdir = Path(onnx_path), Path(workdir)
    if target.runtime != "tensorrt":
        return {"status": "skipped", "reason": f"{target.runtime} target: the ONNX is served as is",
                "artifact": None, "metrics": {}, "trtexec": None}
    if not onnx_path.is_file():
        raise UserError(f"build stage: ONNX not found: {onnx_path}")
    from pipeline.build.trt_builder import cache_key, onnx_has_qdq
    from pipeline.build.trtexec import trtexec_command

    options = build_options_for(target, workdir)
    in_shapes = onnx_input_shapes(onnx_path)
    spec = target.tensorrt
    # Paths relative to the folder the command runs in on the device (the bundle), not this machine's.
    device_options = replace(options, timing_cache="timing.cache" if options.timing_cache else None)
    argv = trtexec_command(onnx_path.name, "model.engine", device_options, spec.tensorrt_version, in_shapes,
                           explicit_int8=onnx_has_qdq(onnx_path.read_bytes()))
    device_cmd = ["python3", "trt_builder.py", "--onnx", onnx_path.name, "--engine", "model.engine",
                  "--min-batch", str(options.min_batch), "--opt-batch", str(options.opt_batch),
                  "--max-batch", str(options.max_batch), "--workspace-mib", str(options.workspace_mib),
                  "--opt-level", str(options.opt_level), "--timing-cache", "timing.cache", "--report", "build.json"]
    if options.dla_core is not None:
        device_cmd += ["--dla-core", str(options.dla_core)] + (["--gpu-fallback"] if options.gpu_fallback else [])
    device_cmd += (["--fp16"] if options.fp16 else []) + (["--sparse"] if options.sparse else [])
    trt, device, reason = tensorrt_here()
    if reason:
        return {"status": "skipped", "reason": reason, "artifact": None,
                "metrics": {"device_build_command": device_cmd}, "trtexec": argv}

    shapes = {n: {k: [b] + s for k, b in (("min", options.min_batch), ("opt", options.opt_batch),
                                          ("max", options.max_batch))} for n, s in in_shapes.items()}
    key = cache_key(sha256_file(onnx_path), str(trt.__version__), device, options, shapes)
    engine_path = workdir / f"model_{key[:16]}.engine"
    report_path = workdir / "build_report.json"
    status = "cached"
    if force or not engine_path.is_file():
        from pipeline.build.trt_builder import BuildError, build_engine

        try:
            report = build_engine(str(onnx_path), str(engine_path), options, trt=trt, device=device)
        except BuildError as e:
            raise UserError(f"build stage ({target.name}): {e}") from None
        report["target_compute_capability"] = spec.compute_capability
        report["engine_runs_on_target"] = device.get("compute_capability") == spec.compute_capability
        write_json(report_path, report)
        status = "done"
    from pipeline.fileio import read_json

    report = read_json(report_path, "build report") if report_path.is_file() else {}
    metrics: dict[str, Any] = {"build": report, "device_build_command": device_cmd}
    if calib_x is not None and len(calib_x):
        metrics["parity"] = engine_parity(onnx_path, engine_path, calib_x[:PARITY_SAMPLES], options)
    return {"status": status, "reason": None, "artifact": {"path": engine_path}, "metrics": metrics,
            "trtexec": argv}


def engine_parity(onnx_path: Path, engine_path: Path, x: np.ndarray, options: Any) -> dict[str, Any]:
    """Run the engine and ONNX Runtime on `x` and compare (see pipeline.build.parity)."""
    from pipeline.build.parity import parity_vs_ort
    from pipeline.runtimes.base import RunnerOptions
    from pipeline.runtimes.trt import TrtRunner

    runner = TrtRunner(str(engine_path), RunnerOptions(device="cuda", extra={"dla_core": options.dla_core}))
    runner.open()
    try:
        name = runner.inputs()[0].name
        return parity_vs_ort(str(onnx_path), x, lambda b: runner.infer({name: b})[0], options.max_batch, name)
    finally:
        runner.close()


def run(inputs: Any, cfg: Any, workdir: Path) -> Any:
    """Pipeline stage entry point (pipeline.stages.base protocol): build the quantized ONNX for the target.

    Args:
        inputs: StageInputs; uses artifact("quantize").path, target, data.test_x (parity samples).
        cfg: unused (the target file carries every build setting).
        workdir: the stage's folder.
    Returns:
        Artifact: files {"engine", "report"} (primary "engine") when built, else {"report"} with status
        "skipped" and metrics["reason"].
    """
    from pipeline.stages.base import Artifact

    workdir = Path(workdir)
    target = inputs.target
    onnx_path = Path(inputs.artifact("quantize").path)
    calib = getattr(inputs.data, "test_x", None) if target.runtime == "tensorrt" else None
    result = build_for_target(onnx_path, target, workdir, calib)
    metrics = _jsonable(dict(result["metrics"], trtexec=result["trtexec"]))
    metrics.pop("build", None)
    report_path = workdir / "build_report.json"
    if result["status"] == "skipped":
        metrics["reason"] = result["reason"]
        write_json(report_path, dict(metrics, status="skipped", target=target.name))
        return Artifact({"report": report_path}, "report", metrics, "skipped")
    build = result["metrics"].get("build", {})
    metrics["build"] = {k: build.get(k) for k in (
        "tensorrt_version", "device", "strongly_typed", "fp16_applied", "flags", "precision_notes", "shapes",
        "workspace_mib", "builder_optimization_level", "dla", "build_seconds", "engine_bytes", "cache_key",
        "engine_runs_on_target")}
    parity = metrics.get("parity")
    metrics["summary"] = "engine built with TensorRT %s on %s" % (
        build.get("tensorrt_version"), (build.get("device") or {}).get("name", "?")) + (
        "; parity vs ONNX Runtime: max abs diff %.4g, top-1 agreement %.1f%%"
        % (parity["max_abs_diff"], 100 * parity["top1_agreement"]) if parity else "")
    return Artifact({"engine": Path(result["artifact"]["path"]), "report": report_path}, "engine", metrics,
                    "done")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
