"""Who serves a target: one `Backend` per runtime (`onnxruntime`, `tensorrt`), from `backend_for(target)`.

A backend knows, for its runtime: how to build the final model for the target (`build`), what else a
built engine depends on (`cache_environment`, part of the build stage's cache key), how the host
benchmark opens the models (`host_runtime_options`), what the deploy bundle carries (`check_model`,
`bundle`, `readme_requirements`, `readme_build_step`) and which runtime the device runs (`device_module`).
What differs between runtimes lives here, so no other module compares `target.runtime`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.fileio import read_json, sha256_file, write_json, write_text
from pipeline.targets import OrtSpec, Target

PIPELINE_DIR = Path(__file__).resolve().parent
PARITY_SAMPLES = 64  # engine vs ONNX Runtime parity runs on this many held-out images


@dataclass(frozen=True)
class BuildResult:
    """What `Backend.build` did.

    Attributes:
        status: "done" (built), "cached" (an engine with the same cache key was reused) or "skipped".
        reason: why nothing was built ("skipped" only).
        engine: the engine file, when one exists.
        report: the builder's report (engine, flags, shapes, DLA layers, seconds, cache key).
        parity: engine vs ONNX Runtime (max abs diff, top-1 agreement), when it was measured.
        trtexec: the trtexec argv that builds the same engine on the device.
        device_command: the bundled trt_builder.py command that builds it on the device.
        ort: ONNX Runtime Mobile targets: the .ort conversion, its check and ORT's mobile usability verdict
            (`pipeline.build.ort_format.build_ort`); `engine` is then the .ort file.
    """

    status: str
    reason: str | None = None
    engine: Path | None = None
    report: dict = field(default_factory=dict)
    parity: dict | None = None
    trtexec: list | None = None
    device_command: list | None = None
    ort: dict | None = None


def ship_standalone(src: Path, dest: Path) -> None:
    """Copy a module into a bundle after checking it runs without edgepipe installed.

    Args:
        src: the module in this package.
        dest: its path in the bundle.
    Raises:
        UserError: the module imports `pipeline` at module level without a fallback.
    """
    from pipeline.build.recipe import check_standalone

    if src.suffix == ".py":
        check_standalone(src)
    shutil.copyfile(src, dest)


class Backend:
    """The runtime-specific parts of building, benchmarking and bundling; see the module docstring."""

    runtime = ""  # the `target.runtime` it serves
    device_module = ""  # the runtime the device runner uses
    readme_requirements = ""  # what the device needs, for the bundle README

    def build(self, onnx_path: Path, target: Target, workdir: Path, samples: Any = None,
              force: bool = False, sparse_2_4: bool = False) -> BuildResult:
        """Build the final ONNX for `target` in `workdir`, or say why nothing is built.

        Args:
            onnx_path: the final INT8 QDQ ONNX.
            target: the target.
            workdir: the build stage's folder.
            samples: inputs (N, C, H, W) float32 for parity checks; None skips them.
            force: rebuild even when an engine with the same cache key is there.
            sparse_2_4: the model's weights are 2:4 sparse (TensorRT's sparse-weights flag, on GPUs that have
                sparse tensor cores; other backends ignore it).
        Returns:
            BuildResult.
        """
        raise NotImplementedError

    def cache_environment(self, target: Target) -> dict[str, Any]:
        """What a build depends on beyond the ONNX and the target ({} when nothing).

        Args:
            target: the target.
        Returns:
            JSON-able facts for the build stage's cache key.
        """
        return {}

    def host_runtime_options(self, target: Target, threads: int | None = None) -> Any:
        """How the host benchmark opens the models in ONNX Runtime (one shared intra-op pool).

        Args:
            target: the target.
            threads: `benchmark.threads` from the config; None: the target's or ONNX Runtime's choice.
        Returns:
            pipeline.runtimes.base.RuntimeOptions.
        """
        from pipeline.runtimes.base import RuntimeOptions

        return RuntimeOptions(threads=threads, shared_thread_pool=True)

    def check_model(self, onnx_path: Path) -> None:
        """Refuse a final model this runtime cannot take (raises UserError); nothing to check by default."""

    def bundle(self, target: Target, input_spec: dict[str, Any], out: Path,
               sparse_2_4: bool = False) -> dict[str, Any] | None:
        """Add this runtime's files to the bundle folder `out`.

        Args:
            target: the target.
            input_spec: the run manifest's `final.input`.
            out: the bundle folder being assembled.
            sparse_2_4: the build stage found a 2:4 model for sparse tensor cores (the device build turns on
                TensorRT's sparse-weights flag too).
        Returns:
            The manifest's `build` section, or None when the device builds nothing.
        """
        return None

    def readme_build_step(self, build: dict[str, Any] | None) -> str:
        """The README sentence on what the device runner builds before measuring."""
        return "No build step: ONNX Runtime runs the ONNX directly."

    def bundle_build_outputs(self, target: Target, run_dir: Path, record: dict[str, Any] | None,
                             out: Path) -> dict[str, Any] | None:
        """Copy what the run's build stage made for the device into the bundle (nothing by default).

        Args:
            target: the target.
            run_dir: the pipeline run folder.
            record: the run manifest's record of the build stage (files, metrics), or None.
            out: the bundle folder being assembled.
        Returns:
            A manifest section, or None when nothing was added.
        """
        return None


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime targets (CPUs, ARM boards): the ONNX is served as is, with the target's session settings."""

    runtime = device_module = "onnxruntime"
    readme_requirements = "numpy and onnxruntime"

    def build(self, onnx_path: Path, target: Target, workdir: Path, samples: Any = None,
              force: bool = False, sparse_2_4: bool = False) -> BuildResult:
        """For `onnxruntime.model_format: ort`, the ORT-format model with its reduced-build config, checked
        against the ONNX on the CPU provider; otherwise "skipped": the ONNX is served as is (see `Backend.build`)."""
        if (target.onnxruntime or OrtSpec()).model_format != "ort":
            return BuildResult("skipped", f"{self.runtime} target: the ONNX is served as is")
        from pipeline.build.ort_format import build_ort

        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise UserError(f"build stage: ONNX not found: {onnx_path}")
        built = build_ort(onnx_path, target, Path(workdir), samples)
        return BuildResult("done", engine=Path(workdir) / built["ort_format"]["model"], report=built["ort_format"],
                           parity=built["parity"], ort=built)

    def cache_environment(self, target: Target) -> dict[str, Any]:
        """The ONNX Runtime version when it writes an .ort (its format and optimizations follow the version)."""
        if (target.onnxruntime or OrtSpec()).model_format != "ort":
            return {}
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}

    def bundle_build_outputs(self, target: Target, run_dir: Path, record: dict[str, Any] | None,
                             out: Path) -> dict[str, Any] | None:
        """For `model_format: ort` targets, ship model.ort, its operator config and the usability report, and
        return the manifest's `ort_mobile` section (files, session setup, parity, ORT's mobile verdict)."""
        if (target.onnxruntime or OrtSpec()).model_format != "ort":
            return None
        metrics = (record or {}).get("metrics") or {}
        fmt, files = metrics.get("ort_format"), (record or {}).get("files") or {}
        if not fmt or "ort_model" not in files:
            raise UserError(f"run {run_dir} has no .ort model for target {target.name} (onnxruntime.model_format: "
                            "ort): rerun the pipeline so the build stage writes it")
        for role in ("ort_model", "ort_config", "usability_log"):
            if role in files:
                shutil.copyfile(run_dir / files[role], out / Path(files[role]).name)
        return {"model": fmt["model"], "config": fmt["config"], "usability_log": fmt.get("usability_log"),
                "session": fmt["session"], "fixed_batch": fmt.get("fixed_batch"),
                "optimization_style": fmt["optimization_style"], "parity": metrics.get("parity"),
                "mobile_usability": metrics.get("mobile_usability")}

    def host_runtime_options(self, target: Target, threads: int | None = None) -> Any:
        """The target's `onnxruntime:` section: threads, graph optimizations, the providers present here.

        Args:
            target: the target.
            threads: `benchmark.threads`; when None, the target's `intra_op_threads`.
        Returns:
            pipeline.runtimes.base.RuntimeOptions.
        """
        import onnxruntime as ort

        from pipeline.runtimes.base import RuntimeOptions

        spec = target.onnxruntime or OrtSpec()
        available = set(ort.get_available_providers())
        providers = tuple(p for p in spec.execution_providers if p in available) or ("CPUExecutionProvider",)
        return RuntimeOptions(threads=threads or spec.intra_op_threads, providers=providers,
                              graph_optimization_level=spec.graph_optimization_level, shared_thread_pool=True)


class TensorRTBackend(Backend):
    """TensorRT targets (GPUs, Jetsons): an engine built here when TensorRT and a GPU are, else on the device."""

    runtime = device_module = "tensorrt"
    readme_requirements = ("numpy, TensorRT's Python bindings (JetPack) and cuda-python or pycuda (for "
                           "trt_runtime.py's device buffers)")
    bundle_files = ((PIPELINE_DIR / "runtimes" / "trt.py", "trt_runtime.py"),
                    (PIPELINE_DIR / "build" / "trt_builder.py", "trt_builder.py"),
                    (PIPELINE_DIR / "build" / "trt_plan.py", "trt_plan.py"))

    def build(self, onnx_path: Path, target: Target, workdir: Path, samples: Any = None,
              force: bool = False, sparse_2_4: bool = False) -> BuildResult:
        """Build (or reuse) the engine when TensorRT and a CUDA GPU are here, and compare it with ONNX Runtime;
        otherwise "skipped" with the reason and the commands that build it on the device (see `Backend.build`)."""
        from pipeline.build.recipe import onnx_input_spec, tensorrt_recipe
        from pipeline.build.trt_plan import onnx_has_qdq

        onnx_path, workdir = Path(onnx_path), Path(workdir)
        if not onnx_path.is_file():
            raise UserError(f"build stage: ONNX not found: {onnx_path}")
        recipe = tensorrt_recipe(target, onnx_input_spec(onnx_path), onnx_name=onnx_path.name,
                                 explicit_int8=onnx_has_qdq(onnx_path.read_bytes()), sparse_2_4=sparse_2_4)
        trt, device, reason = tensorrt_here()
        if reason:
            return BuildResult("skipped", reason, trtexec=recipe.trtexec_argv, device_command=recipe.device_command)
        status, engine, report = self._engine(onnx_path, target, workdir, recipe, trt, device, force)
        parity = None
        if samples is not None and len(samples):
            parity = engine_parity(onnx_path, engine, samples[:PARITY_SAMPLES], recipe.options)
        return BuildResult(status, None, engine, report, parity, recipe.trtexec_argv, recipe.device_command)

    def _engine(self, onnx_path: Path, target: Target, workdir: Path, recipe: Any, trt: Any, device: dict,
                force: bool) -> tuple[str, Path, dict]:
        """(status, engine path, report): reuse the engine whose report has this cache key, else build it."""
        from pipeline.build.trt_builder import BuildError, build_engine
        from pipeline.build.trt_plan import cache_key

        options = recipe.host_options(workdir)
        key = cache_key(sha256_file(onnx_path), str(trt.__version__), device, options, recipe.profile_shapes())
        engine, report_path = workdir / recipe.engine, workdir / recipe.report
        report = read_json(report_path, "build report") if engine.is_file() and report_path.is_file() else {}
        if not force and report.get("cache_key") == key:
            return "cached", engine, report
        try:
            report = build_engine(str(onnx_path), str(engine), options, trt=trt, device=device)
        except BuildError as e:
            raise UserError(f"build stage ({target.name}): {e}") from None
        report["target_compute_capability"] = target.tensorrt.compute_capability
        report["engine_runs_on_target"] = device.get("compute_capability") == target.tensorrt.compute_capability
        write_json(report_path, report)
        return "done", engine, report

    def cache_environment(self, target: Target) -> dict[str, Any]:
        """The TensorRT version and GPU here: an upgrade or another GPU rebuilds instead of reusing an engine."""
        trt, device, reason = tensorrt_here()
        return {"tensorrt": getattr(trt, "__version__", None), "device": device, "reason": reason}

    def check_model(self, onnx_path: Path) -> None:
        """TensorRT's explicit quantization takes S8S8 symmetric QDQ with float biases only."""
        from pipeline.build.recipe import check_qdq_for_tensorrt

        check_qdq_for_tensorrt(onnx_path)

    def bundle(self, target: Target, input_spec: dict[str, Any], out: Path,
               sparse_2_4: bool = False) -> dict[str, Any] | None:
        """Ship the builder (with its planning module) and the runtime, write build_trtexec.sh, return the
        manifest's `build` section (see `Backend.bundle`)."""
        from pipeline.build.recipe import BUILDER_SCRIPT, TRTEXEC_SCRIPT, build_script, tensorrt_recipe

        for src, name in self.bundle_files:
            ship_standalone(src, out / name)
        spec = target.tensorrt
        gpu = tensorrt_recipe(target, input_spec, sparse_2_4=sparse_2_4)
        dla = tensorrt_recipe(target, input_spec, dla=True, sparse_2_4=sparse_2_4) if spec.dla_cores > 0 else None
        script = out / TRTEXEC_SCRIPT
        write_text(script, build_script(target, gpu.trtexec_argv, dla.trtexec_argv if dla else None))
        script.chmod(0o755)
        return {
            "engine": gpu.engine, "report": gpu.report, "python_builder": BUILDER_SCRIPT,
            "python_args": gpu.python_args, "python_args_dla": dla.builder_args if dla else None,
            "trtexec_script": TRTEXEC_SCRIPT, "trtexec_argv": gpu.trtexec_argv,
            "trtexec_argv_dla": dla.trtexec_argv if dla else None,
            "dla_core": -1 if gpu.options.dla_core is None else gpu.options.dla_core, "dla_cores": spec.dla_cores,
            "dla_batch": target.profile.opt_batch, "tensorrt_version": spec.tensorrt_version, "jetpack": spec.jetpack,
        }

    def readme_build_step(self, build: dict[str, Any] | None) -> str:
        """The engine is built first, by our builder or trtexec (and for a DLA core, how)."""
        text = (f"The runner builds `{build['engine']}` first (our Python builder when TensorRT's Python "
                "bindings are installed, else `sh build_trtexec.sh`")
        if build.get("dla_cores"):
            return text + "; `DLA_CORE=0 sh build_trtexec.sh` builds for DLA core 0 with GPU fallback)."
        return text + ")."


def tensorrt_here() -> tuple[Any, dict[str, Any], str | None]:
    """(tensorrt module or None, CUDA device info, the reason it cannot build here or None)."""
    from pipeline.build.trt_builder import cuda_device_info

    try:
        import tensorrt as trt
    except ImportError as e:
        return None, {}, f"TensorRT is not installed here ({e})"
    device = cuda_device_info()
    if not device:
        return trt, {}, "no CUDA GPU visible through cuda-python or pycuda"
    return trt, device, None


def engine_parity(onnx_path: Path, engine_path: Path, x: Any, options: Any) -> dict[str, Any]:
    """Run the engine and ONNX Runtime on `x` and compare them (see pipeline.build.parity).

    Args:
        onnx_path: the ONNX the engine was built from.
        engine_path: the engine.
        x: inputs (N, C, H, W) float32.
        options: the BuildOptions (max batch, DLA core).
    Returns:
        max abs diff, top-1 agreement and the reference used.
    """
    from pipeline.build.parity import parity_vs_ort
    from pipeline.runtimes.base import RuntimeOptions, open_runtime

    with open_runtime(str(engine_path), "tensorrt", RuntimeOptions(device="cuda", dla_core=options.dla_core)) as rt:
        name = rt.inputs()[0].name
        return parity_vs_ort(str(onnx_path), x, lambda b: rt.infer({name: b})[0], options.max_batch, name)


BACKENDS: dict[str, Backend] = {b.runtime: b for b in (OnnxRuntimeBackend(), TensorRTBackend())}


def backend_for(target: Target) -> Backend:
    """The backend that serves `target` (by `target.runtime`).

    Args:
        target: a loaded Target.
    Returns:
        Its Backend.
    Raises:
        UserError: a runtime no backend serves.
    """
    try:
        return BACKENDS[target.runtime]
    except KeyError:
        raise UserError(f"target {target.name}: runtime {target.runtime!r} has no backend "
                        f"(allowed: {', '.join(BACKENDS)})") from None
