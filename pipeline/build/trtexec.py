"""The `trtexec` build command equivalent to our Python builder, per TensorRT version.

trtexec is not in any pip wheel (JetPack: /usr/src/tensorrt/bin/trtexec). Flag names checked against
NVIDIA's trtexec help text and the 10.x -> 11.x migration guide: --memPoolSize=workspace:<size> replaced
--workspace in 10.0; --fp16/--int8/--best were removed in 11.0 (always strongly typed, so --stronglyTyped
is no longer needed there).
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.build.trt_plan import BuildOptions


def trtexec_build_argv(
    onnx_path: str,
    engine_path: str,
    options: BuildOptions,
    tensorrt_version: str,
    input_shapes: dict[str, Sequence[int]],
    explicit_int8: bool = True,
) -> list[str]:
    """The `trtexec` command that builds the same engine as our Python builder, for a TensorRT version.

    Args:
        onnx_path: the ONNX file, as the command will see it (relative to where it runs).
        engine_path: where trtexec saves the engine.
        options: the BuildOptions (profile, workspace, DLA, sparsity, timing cache, precision).
        input_shapes: input name -> shape without the batch axis, e.g. {"input": [1, 16, 16]}.
        tensorrt_version: e.g. "10.3" or "11.4"; decides which flags exist.
        explicit_int8: the ONNX has Q/DQ nodes (--int8 on a graph without them would calibrate with dummy data).
    Returns:
        argv for /usr/src/tensorrt/bin/trtexec (JetPack) or trtexec on PATH.
    """
    major = int(str(tensorrt_version).split(".")[0])

    def shapes(batch: int) -> str:
        return ",".join("%s:%s" % (n, "x".join(str(d) for d in [batch] + list(s))) for n, s in input_shapes.items())

    argv = [
        "trtexec",
        "--onnx=%s" % onnx_path,
        "--saveEngine=%s" % engine_path,
        "--minShapes=%s" % shapes(options.min_batch),
        "--optShapes=%s" % shapes(options.opt_batch),
        "--maxShapes=%s" % shapes(options.max_batch),
        "--memPoolSize=workspace:%dM" % int(options.workspace_mib),
    ]
    if options.opt_level is not None:
        argv.append("--builderOptimizationLevel=%d" % int(options.opt_level))
    if options.timing_cache:
        argv.append("--timingCacheFile=%s" % options.timing_cache)
    if options.dla_core is not None:
        argv.append("--useDLACore=%d" % int(options.dla_core))
        if options.gpu_fallback:
            argv.append("--allowGPUFallback")
    if options.sparse:
        argv.append("--sparsity=enable")
    if major < 11:
        # --fp16/--int8 were removed in 11.0 (strong typing always on, --stronglyTyped unnecessary).
        if options.fp16 or options.dla_core is not None:
            argv += ["--fp16"] + (["--int8"] if explicit_int8 else [])
        elif major >= 10:
            argv.append("--stronglyTyped")
        elif explicit_int8:
            argv.append("--int8")
    return argv
