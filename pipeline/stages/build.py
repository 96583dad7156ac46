"""Stage `build`: build the final ONNX for the target, through the target's backend (`pipeline.backends`).

ONNX Runtime targets have nothing to build (status "skipped": the ONNX is served as is), except those whose
`onnxruntime.model_format` is `ort` (phones): they get the ORT-format model, the operator config for a
reduced ORT build and ORT's mobile usability report, the .ort checked against the ONNX (`build.ort_format`).
TensorRT targets get an engine when TensorRT and a CUDA GPU are here, compared with ONNX Runtime on the first held-out
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
        Artifact: files {"engine", "report"} (primary "engine") when built, for an `onnxruntime.model_format:
        ort` target {"ort_model", "ort_config", "usability_log", "report"} (primary "ort_model"), else
        {"report"} with status "skipped" and BuildMetrics.reason.
    """
    from pipeline.backends import backend_for

    workdir, target = Path(workdir), inputs.target
    onnx_path = Path(inputs.artifact("quantize").path)
    # TensorRT's sparse-weights flag: only for a 2:4 model on a GPU with sparse tensor cores
    sparse = bool(target.tensorrt and target.tensorrt.sparsity_2_4 and model_is_2_4(inputs, onnx_path))
    result = backend_for(target).build(onnx_path, target, workdir, _parity_samples(inputs.data), sparse_2_4=sparse)
    report_path = workdir / BUILD_REPORT
    if result.status == "skipped":
        metrics = BuildMetrics(device_build_command=_jsonable(result.device_command),
                               trtexec=_jsonable(result.trtexec), reason=result.reason, sparse_2_4=sparse or None)
        write_json(report_path, dict(metrics.to_dict(), status="skipped", target=target.name))
        return Artifact({"report": report_path}, "report", metrics, "skipped")
    if result.ort is not None:
        return _ort_artifact(result, target, workdir, report_path)
    report, parity = result.report, result.parity
    summary = "engine built with TensorRT %s on %s" % (
        report.get("tensorrt_version"), (report.get("device") or {}).get("name", "?")) + (
        "; parity vs ONNX Runtime: max abs diff %.4g, top-1 agreement %.1f%%"
        % (parity["max_abs_diff"], 100 * parity["top1_agreement"]) if parity else "")
    metrics = BuildMetrics(device_build_command=_jsonable(result.device_command), parity=_jsonable(parity),
                           trtexec=_jsonable(result.trtexec), build={k: report.get(k) for k in REPORTED},
                           summary=summary, sparse_2_4=sparse or None)
    return Artifact({"engine": Path(result.engine), "report": report_path}, "engine", metrics, "done")


def _ort_artifact(result: Any, target: Any, workdir: Path, report_path: Path) -> Artifact:
    """The ONNX Runtime Mobile build: model.ort (primary), its operator config, the usability log, the report."""
    from pipeline.build.ort_format import summary

    built = _jsonable(result.ort)
    metrics = BuildMetrics(parity=built["parity"], trtexec=None, summary=summary(built),
                           ort_format=built["ort_format"], mobile_usability=built["mobile_usability"])
    write_json(report_path, dict(metrics.to_dict(), status="done", target=target.name))
    fmt = built["ort_format"]
    files = {"ort_model": workdir / fmt["model"], "ort_config": workdir / fmt["config"], "report": report_path}
    if fmt.get("usability_log"):
        files["usability_log"] = workdir / fmt["usability_log"]
    return Artifact(files, "ort_model", metrics, "done")


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


def model_is_2_4(inputs: StageInputs, onnx_path: Path) -> bool:
    """Whether the model is 2:4 sparse, for TensorRT's sparse-weights flag (`tensorrt_recipe(sparse_2_4=...)`,
    which also needs the target's sparse tensor cores): the prune stage's metrics say so (`sparsity: "2:4"`)
    when this stage is given them, else the ONNX's weights are checked (INT8 QDQ weights keep the zeros).

    Args:
        inputs: the stage's inputs (the `prune` artifact, when present).
        onnx_path: the model to build.
    Returns:
        True for a 2:4 model.
    """
    pruned = inputs.artifacts.get("prune")
    if pruned is not None and pruned.metrics is not None:
        return getattr(pruned.metrics, "sparsity", None) == "2:4"
    from pipeline.pruning.sparsity import is_2_4_sparse

    return Path(onnx_path).is_file() and is_2_4_sparse(onnx_path)
