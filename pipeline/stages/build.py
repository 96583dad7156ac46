"""Stage `build`: build the final ONNX for the target, through the target's backend (`pipeline.backends`).

ONNX Runtime targets have nothing to build (status "skipped": the ONNX is served as is). TensorRT targets
get an engine when TensorRT and a CUDA GPU are here, compared with ONNX Runtime on the first held-out
images; without them the stage is "skipped" with the reason and records the trtexec and trt_builder.py
commands that build the engine on the device (`pipeline.build.recipe`). `build_report.json` is always
written: the primary file when nothing was built, beside the engine otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.build.recipe import BUILD_REPORT
from pipeline.fileio import write_json
from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.metrics import BuildMetrics

# The engine facts the stage records in its metrics (the whole report stays in build_report.json).
REPORTED = ("tensorrt_version", "device", "strongly_typed", "fp16_applied", "flags", "precision_notes", "shapes",
            "workspace_mib", "builder_optimization_level", "dla", "build_seconds", "engine_bytes", "cache_key",
            "engine_runs_on_target")


def run(inputs: StageInputs, cfg: Any, workdir: Path) -> Artifact:
    """Build the quantized ONNX for the target.

    Args:
        inputs: uses artifact("quantize").path, the target and a bounded held-out sample (parity).
        cfg: unused (the target file carries every build setting).
        workdir: the stage's folder.
    Returns:
        Artifact: files {"engine", "report"} (primary "engine") when built, else {"report"} with status
        "skipped" and BuildMetrics.reason.
    """
    from pipeline.backends import backend_for

    workdir, target = Path(workdir), inputs.target
    onnx_path = Path(inputs.artifact("quantize").path)
    result = backend_for(target).build(onnx_path, target, workdir, _parity_samples(inputs.data))
    report_path = workdir / BUILD_REPORT
    if result.status == "skipped":
        metrics = BuildMetrics(device_build_command=_jsonable(result.device_command),
                               trtexec=_jsonable(result.trtexec), reason=result.reason)
        write_json(report_path, dict(metrics.to_dict(), status="skipped", target=target.name))
        return Artifact({"report": report_path}, "report", metrics, "skipped")
    report, parity = result.report, result.parity
    summary = "engine built with TensorRT %s on %s" % (
        report.get("tensorrt_version"), (report.get("device") or {}).get("name", "?")) + (
        "; parity vs ONNX Runtime: max abs diff %.4g, top-1 agreement %.1f%%"
        % (parity["max_abs_diff"], 100 * parity["top1_agreement"]) if parity else "")
    metrics = BuildMetrics(device_build_command=_jsonable(result.device_command), parity=_jsonable(parity),
                           trtexec=_jsonable(result.trtexec), build={k: report.get(k) for k in REPORTED},
                           summary=summary)
    return Artifact({"engine": Path(result.engine), "report": report_path}, "engine", metrics, "done")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


PARITY_SAMPLES = 256  # held-out images the engine is compared with ONNX Runtime on


def _parity_samples(data: Any) -> Any:
    """The first held-out images as an array (None without data: parity is skipped)."""
    return None if data is None else data.sample("test", PARITY_SAMPLES)[0]
