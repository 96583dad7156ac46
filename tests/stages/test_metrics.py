"""Typed stage metrics: the JSON round trip keeps stage.json and the manifest exactly as they were."""

from __future__ import annotations

import json

import pytest

from pipeline.stages import STAGES
from pipeline.stages.final import final_record
from pipeline.stages.metrics import BenchmarkMetrics, BuildMetrics, DistillMetrics, LabelScarce, QuantizeMetrics
from pipeline.targets import QuantScheme

# Recorded by the stages before they were typed (key order included): they must read back unchanged.
RECORDED = {
    "train_teacher": {"source": "trained here", "train": {"epochs": 12, "final_loss": 0.01, "val_accuracy": 0.99},
                      "accuracy": 0.9955, "val_accuracy": 0.99, "params": 2784090, "macs": 105430000},
    "distill": {"temperature": 4.0, "alpha": 0.3, "accuracy": 0.9933, "params": 50410, "macs": 1790000,
                "labeled_images": 1167, "images": 1167, "scratch_accuracy": 0.9955, "kd_gain_pp": -0.22,
                "label_scarce": {"labeled_fraction": 0.1, "labeled_images": 119, "kd_accuracy": 0.9933,
                                 "scratch_accuracy": 0.9622, "kd_gain_pp": 3.11}},
    "prune": {"ratio": 0.5, "params_before": 50410, "macs_before": 1790000, "accuracy_before": 0.9933,
              "params": 14840, "macs": 551560, "accuracy": 0.9911, "pruned": True, "params_reduction": 3.4,
              "macs_reduction": 3.25},
    "export": {"student": {"nodes_before": 60, "nodes_after": 40, "opset": 17, "simplified": True,
                           "parity_vs_torch": {"max_abs_diff": 1e-06, "top1_agreement": 1.0, "samples": 450},
                           "accuracy": 0.9911, "file_bytes": 72500},
               "teacher": {"nodes_before": 90, "nodes_after": 70, "opset": 17, "simplified": True,
                           "parity_vs_torch": {"max_abs_diff": 2e-06, "top1_agreement": 1.0, "samples": 450},
                           "accuracy": 0.9955, "file_bytes": 11110000},
               "accuracy": 0.9911},
    "quantize": {"accuracy": 0.9911, "accuracy_fp32": 0.9911, "drop_pp": 0.0, "top1_agreement": 0.998,
                 "max_abs_diff": 0.3, "excluded_nodes": [], "attempts": [{"excluded": [], "accuracy": 0.9911}],
                 "scheme": QuantScheme(reduce_range=True).model_dump(), "method": "minmax",
                 "calibration_samples": 256, "file_bytes": 68900},
    "build": {"trtexec": None, "reason": "onnxruntime target: the ONNX is served as is"},
    "benchmark": {"latency": {"final_int8": {"1": {"p50": 0.085, "p90": 0.104, "p99": 0.2, "throughput_ips": 11000.0,
                                                   "cv": 0.3}},
                              "teacher_fp32": {"1": {"p50": 1.086, "p90": 1.231, "p99": 1.5, "throughput_ips": 900.0,
                                                     "cv": 0.1}}},
                  "batch": 1, "speedup_p50_vs_teacher": 12.78, "threads": None},
    "report": {"rows": 6},
}


@pytest.mark.parametrize("entry", STAGES, ids=lambda e: e.name)
def test_recorded_metrics_round_trip_unchanged(entry):
    recorded = RECORDED[entry.name]
    typed = entry.metrics.from_dict(json.loads(json.dumps(recorded)))
    assert json.dumps(typed.to_dict()) == json.dumps(recorded)  # same keys, values and order
    assert entry.metrics.from_dict(typed.to_dict()) == typed


def test_nested_fields_are_typed_and_optional_ones_left_out():
    d = DistillMetrics.from_dict(RECORDED["distill"])
    assert isinstance(d.label_scarce, LabelScarce) and d.label_scarce.kd_gain_pp == 3.11
    q = QuantizeMetrics.from_dict(RECORDED["quantize"])
    assert isinstance(q.scheme, QuantScheme) and q.scheme.reduce_range
    b = BenchmarkMetrics.from_dict(RECORDED["benchmark"])
    assert b.at("final_int8").p50 == 0.085 and b.at("student_fp32") is None and b.at("final_int8", 32) is None
    build = BuildMetrics(trtexec=["trtexec"], device_build_command=["python3"], summary="built")
    assert list(build.to_dict()) == ["device_build_command", "trtexec", "summary"] and build.note == "built"
    with pytest.raises(TypeError, match="unknown metrics"):
        BuildMetrics.from_dict({"trtexec": None, "surprise": 1})
    with pytest.raises(TypeError):
        DistillMetrics.from_dict({"accuracy": 0.5})  # required fields missing


def test_final_record_reads_typed_metrics(tmp_path, make_tiny_onnx):
    from types import SimpleNamespace

    from pipeline.stages.base import Artifact
    from pipeline.targets import load_target

    out = tmp_path
    for d in ("quantize", "export", "report"):
        (out / d).mkdir()
    q = make_tiny_onnx(out / "quantize" / "model_int8.onnx")
    arts = {
        "quantize": Artifact({"model": q}, "model", QuantizeMetrics.from_dict(RECORDED["quantize"])),
        "train_teacher": Artifact({}, "model", STAGES[0].metrics.from_dict(RECORDED["train_teacher"])),
        "export": Artifact({"teacher": make_tiny_onnx(out / "export" / "teacher_fp32.onnx")}, "model", None),
        "benchmark": Artifact({}, "results", BenchmarkMetrics.from_dict(RECORDED["benchmark"])),
        "report": Artifact({"report": out / "report" / "report.md"}, "report", None),
    }
    data = SimpleNamespace(input_shape=(1, 16, 16), mean=[0.5], std=[0.5], num_classes=10, description="digits",
                           preprocess=None)
    f = final_record(arts, out, data, load_target("jetson"))
    assert f["path"] == "quantize/model_int8.onnx" and f["accuracy"] == 0.9911 and f["teacher_accuracy"] == 0.9955
    assert f["latency_ms"] == {"p50": 0.085, "p90": 0.104, "p99": 0.2} and f["latency_batch"] == 1
    assert f["teacher_latency_ms"]["p50"] == 1.086 and f["target_runtime"] == "tensorrt"
    assert f["input"]["shape"] == [1, 1, 16, 16] and f["report"] == "report/report.md"
