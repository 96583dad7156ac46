"""Stage report's own run: every number in report.md comes from the stages' typed metrics; the plot exists."""

from __future__ import annotations

import struct

from pipeline.stages import report
from pipeline.stages.base import Artifact
from pipeline.stages.metrics import (
    BenchmarkMetrics,
    BuildMetrics,
    DistillMetrics,
    ExportMetrics,
    LabelScarce,
    LatencySummary,
    OnnxExport,
    PruneMetrics,
    QuantizeMetrics,
    TrainTeacherMetrics,
)
from pipeline.targets import load_target


def _lat(p50: float) -> LatencySummary:
    return LatencySummary(p50=p50, p90=p50 * 1.25, p99=p50 * 2, throughput_ips=1000 / p50, cv=0.05)


def _artifacts(tmp_path, make_tiny_onnx) -> dict[str, Artifact]:
    f = {}
    for name in ("teacher_fp32.onnx", "student_fp32.onnx", "model_int8.onnx"):
        f[name] = make_tiny_onnx(tmp_path / name)
    for name, size in (("student.pt", 4000), ("scratch.pt", 4000), ("pruned.pt", 2000), ("teacher.pt", 90000)):
        f[name] = tmp_path / name
        f[name].write_bytes(b"\0" * size)
    onnx = OnnxExport(nodes_before=3, nodes_after=1, opset=17, simplified=True, accuracy=0.9, file_bytes=1,
                      parity_vs_torch={"max_abs_diff": 1e-6, "top1_agreement": 1.0, "samples": 8})
    return {
        "train_teacher": Artifact({"model": f["teacher.pt"]}, "model", TrainTeacherMetrics(
            source="trained here", accuracy=0.95, val_accuracy=0.94, params=2_780_000, macs=105_430_000)),
        "distill": Artifact({"model": f["student.pt"], "scratch": f["scratch.pt"]}, "model", DistillMetrics(
            temperature=4.0, alpha=0.3, accuracy=0.93, params=50_410, macs=1_790_000, labeled_images=100, images=120,
            scratch_accuracy=0.91, kd_gain_pp=2.0, label_scarce=LabelScarce(
                labeled_fraction=0.1, labeled_images=12, kd_accuracy=0.9, scratch_accuracy=0.8, kd_gain_pp=10.0))),
        "prune": Artifact({"model": f["pruned.pt"]}, "model", PruneMetrics(
            ratio=0.5, params_before=50_410, macs_before=1_790_000, accuracy_before=0.93, params=14_840,
            macs=551_560, accuracy=0.92, pruned=True, params_reduction=3.4, macs_reduction=3.25)),
        "export": Artifact({"model": f["student_fp32.onnx"], "teacher": f["teacher_fp32.onnx"]}, "model",
                           ExportMetrics(student=onnx, teacher=onnx, accuracy=0.92)),
        "quantize": Artifact({"model": f["model_int8.onnx"]}, "model", QuantizeMetrics(
            accuracy=0.91, accuracy_fp32=0.92, drop_pp=1.0, top1_agreement=0.99, max_abs_diff=0.1,
            excluded_nodes=["/stem/Conv"], attempts=[], scheme=load_target("cpu").quantization, method="minmax",
            calibration_samples=32, file_bytes=1)),
        "build": Artifact({"report": f["pruned.pt"]}, "report", BuildMetrics(
            trtexec=None, reason="onnxruntime target: the ONNX is served as is"), "skipped"),
        "benchmark": Artifact({"results": f["pruned.pt"]}, "results", BenchmarkMetrics(
            latency={"teacher_fp32": {"1": _lat(1.2)}, "student_fp32": {"1": _lat(0.2)},
                     "final_int8": {"1": _lat(0.1)}}, batch=1, speedup_p50_vs_teacher=12.0, threads=None)),
    }


def test_report_reads_every_number_from_the_typed_metrics(ctx, tmp_path, make_tiny_onnx):
    art = report.run(ctx.inputs(_artifacts(tmp_path, make_tiny_onnx)), None, ctx.workdir("report"))
    text = art.path.read_text()
    assert art.metrics.rows == 6 and text.count("\n| ") == 6 + 1  # six models and the header
    assert "| train_teacher | teacher (FP32) | 95.00 % | 2.78 M | 105.43 M |" in text
    assert "| 1.200 | 1.500 |" in text and "| 0.100 | 0.125 |" in text  # teacher and final p50/p90
    assert "| distill | student, KD | 93.00 % | 50.41 k | 1.79 M | 4.0 kB | — | — |" in text
    assert "student, pruned 50% + KD fine-tune | 92.00 %" in text
    assert "KD 93.00 %, scratch 91.00 % (+2.00 points)" in text
    assert "Labels on only 12 images (10%)" in text and "(+10.00 points)" in text
    assert "Latency p50 (batch 1): 0.100 ms vs 1.200 ms (12.0x faster)" in text
    assert "uint8 activations, int8 weights, per-channel, calibration minmax on 32 images; kept in float: " \
           "/stem/Conv." in text
    assert "- skipped: onnxruntime target: the ONNX is served as is" in text
    png = art.files["plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (768, 504)
