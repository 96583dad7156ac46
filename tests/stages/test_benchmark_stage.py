"""Stage benchmark's own run, and the host benchmark's ONNX Runtime settings, which come from the target."""

from __future__ import annotations

import json

import pytest

from pipeline.backends import backend_for
from pipeline.stages import benchmark
from pipeline.stages.metrics import BenchmarkMetrics, LatencySummary
from pipeline.targets import load_target

LABELS = {"teacher_fp32", "student_fp32", "final_int8"}


def test_measures_teacher_student_and_final_model(ctx, exported, quantized):
    cfg = ctx.cfg.benchmark  # warm-up 2, 200 iterations, batch 1
    art = benchmark.run(ctx.inputs({"export": exported, "quantize": quantized}), cfg, ctx.workdir("benchmark"))
    m = art.metrics
    assert isinstance(m, BenchmarkMetrics) and m.batch == 1
    assert set(m.latency) == LABELS and all(set(per) == {"1"} for per in m.latency.values())
    for label in LABELS:
        s = m.at(label)
        assert isinstance(s, LatencySummary) and 0 < s.p50 <= s.p90 <= s.p99 and s.throughput_ips > 0
    assert m.at("final_int8", batch=32) is None
    assert m.speedup_p50_vs_teacher == round(m.at("teacher_fp32").p50 / m.at("final_int8").p50, 2)
    doc = json.loads(art.path.read_text())
    assert doc["iterations"] == 200 and doc["batches"] == [1] and doc["results"]["final_int8"]["1"]["p50"] == m.at(
        "final_int8").p50
    assert doc["session"]["providers"] == ["CPUExecutionProvider"]  # the cpu target's onnxruntime section


@pytest.fixture
def ort_target(tmp_path):
    """An ONNX Runtime target with every `onnxruntime:` setting away from its default."""
    p = tmp_path / "board.yaml"
    p.write_text("name: board\nruntime: onnxruntime\narch: aarch64\ndevice_kind: arm-board\n"
                 "quantization: {activation_type: int8, symmetric_activations: true}\n"
                 "onnxruntime: {intra_op_threads: 3, graph_optimization_level: basic,\n"
                 "              execution_providers: [NoSuchExecutionProvider, CPUExecutionProvider]}\n")
    return load_target(str(p))


def _capture(monkeypatch) -> list:
    """Replace the measurement with one that records the options it was given and returns fake stats."""
    import pipeline.bench.isolated as isolated

    seen = []

    def fake(models, feeds, cfg, options=None):
        seen.append((options, cfg))
        stat = {"p50": 1.0, "p90": 1.5, "p99": 2.0, "throughput_ips": 1000.0, "cv": 0.1}
        return {"stats": {name: dict(stat) for name in models}, "thread_pool": "shared"}

    monkeypatch.setattr(isolated, "measure_onnx_interleaved", fake)
    return seen


def test_host_benchmark_uses_the_targets_onnxruntime_settings(ctx, exported, quantized, ort_target, monkeypatch):
    seen = _capture(monkeypatch)
    inputs = ctx.inputs({"export": exported, "quantize": quantized}, target=ort_target)
    art = benchmark.run(inputs, ctx.cfg.benchmark, ctx.workdir("benchmark_board"))
    options, bcfg = seen[0]
    assert options.threads == 3 and bcfg.threads == 3
    assert options.graph_optimization_level == "basic"
    assert options.providers == ("CPUExecutionProvider",)  # the ones this onnxruntime has, in the target's order
    assert options.shared_thread_pool  # interleaved sessions share one intra-op pool
    assert json.loads(art.path.read_text())["session"] == {
        "threads": 3, "providers": ["CPUExecutionProvider"], "graph_optimization_level": "basic"}
    # benchmark.threads in the config wins over the target's
    seen.clear()
    cfg = ctx.cfg.benchmark.model_copy(update={"threads": 1})
    benchmark.run(inputs, cfg, ctx.workdir("benchmark_board_1"))
    assert seen[0][0].threads == 1


def test_tensorrt_targets_benchmark_on_the_host_with_onnxruntime_defaults():
    options = backend_for(load_target("jetson")).host_runtime_options(load_target("jetson"), None)
    assert options.threads is None and options.providers is None and options.graph_optimization_level == "all"
    assert options.shared_thread_pool
