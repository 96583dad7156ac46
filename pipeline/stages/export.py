"""Stage `export`: torch -> ONNX (dynamic batch), onnx.checker, onnxslim, numeric parity vs PyTorch.

Both the final student and the teacher are exported: the teacher's FP32 ONNX stays in the run so the
latency and accuracy comparison can be rerun on any machine.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import BudgetExceeded
from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.common import load_model
from pipeline.stages.metrics import ExportMetrics, OnnxExport

PARITY_SAMPLES = 512  # held-out images compared between PyTorch and ONNX (the first ones: the same every run)


def run(inputs: StageInputs, cfg, workdir: Path) -> Artifact:
    """Produce `student_fp32.onnx` and `teacher_fp32.onnx`.

    Args:
        inputs: needs `prune` (student) and `train_teacher`.
        cfg: `ExportConfig` (opset, simplify, tolerance).
        workdir: this stage's folder.
    Returns:
        Artifact with `model` = student_fp32.onnx, `teacher` = teacher_fp32.onnx; ExportMetrics (parity of both).
    Raises:
        BudgetExceeded: ONNX outputs differ from PyTorch beyond `atol` or `min_top1_agreement`.
    """
    from pipeline.onnx_utils import compare_logits, export_onnx, ort_logits
    from pipeline.training import accuracy, predict_logits

    d = inputs.data
    x_test, y_test = d.sample("test", PARITY_SAMPLES)  # bounded: parity needs no more
    files, exported = {}, {}
    roles = (("student", "prune", "student_fp32.onnx"), ("teacher", "train_teacher", "teacher_fp32.onnx"))
    for role, stage, name in roles:
        model = load_model(inputs, role, inputs.artifact(stage).path)
        path = workdir / name
        info = export_onnx(model, d.input_shape, path, cfg.opset, cfg.dynamo, cfg.simplify)
        ref = predict_logits(model, x_test)
        got = ort_logits(path, x_test)
        parity = compare_logits(ref, got)
        inputs.log(
            f"[export] {name}: {info['nodes_after']} nodes, max |onnx - torch| {parity['max_abs_diff']:.2e}, "
            f"top-1 agreement {parity['top1_agreement'] * 100:.2f}%"
        )
        if parity["max_abs_diff"] > cfg.atol or parity["top1_agreement"] < cfg.min_top1_agreement:
            raise BudgetExceeded(
                f"export: {name} differs from PyTorch: max abs diff {parity['max_abs_diff']:.3g} "
                f"(export.atol = {cfg.atol}), top-1 agreement {parity['top1_agreement']:.4f} "
                f"(export.min_top1_agreement = {cfg.min_top1_agreement})"
            )
        exported[role] = OnnxExport(**info, parity_vs_torch=parity, accuracy=accuracy(got, y_test),
                                    file_bytes=path.stat().st_size)
        files["model" if role == "student" else "teacher"] = path
    metrics = ExportMetrics(student=exported["student"], teacher=exported["teacher"],
                            accuracy=exported["student"].accuracy)
    return Artifact(files, "model", metrics)
