"""INT8 QDQ follows the target's scheme; `quantize_file` searches, meets the budget or fails with advice."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from pipeline.config import QuantizeConfig
from pipeline.errors import BudgetExceeded
from pipeline.int8.evaluate import ClassificationEvaluator, FunctionEvaluator
from pipeline.int8.qdq import weighted_nodes
from pipeline.isa import int8_facts
from pipeline.onnx_utils import compare_logits, export_onnx, ort_logits
from pipeline.stages.metrics import QuantizeMetrics
from pipeline.stages.quantize import quantize_file, quantize_to_qdq, reduce_range_candidates
from pipeline.targets import load_target


@pytest.fixture()
def fp32_onnx(tmp_path, external_models):
    torch.manual_seed(0)
    model = external_models.make_student(3, 2).eval()
    path = tmp_path / "fp32.onnx"
    export_onnx(model, (2, 8, 8), path, opset=17, dynamo=False, simplify=True)
    return path


def _x(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 2, 8, 8)).astype(np.float32)


def qdq_types(path):
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    zp_types, bias_dq = set(), False
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits:
            zp_types.add(str(inits[n.input[2]].dtype))
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int32:
            bias_dq = True
    return zp_types, bias_dq, inits, m


def test_cpu_scheme_is_u8s8_with_quantized_bias(fp32_onnx, tmp_path):
    x = _x(64)
    out = quantize_to_qdq(fp32_onnx, tmp_path / "q.onnx", x, load_target("cpu").quantization, calib_samples=32)
    zp, bias_dq, _, _ = qdq_types(out)
    assert zp == {"uint8"} and bias_dq
    cmp = compare_logits(ort_logits(fp32_onnx, x), ort_logits(out, x))
    assert cmp["top1_agreement"] > 0.8


def test_tensorrt_scheme_is_symmetric_s8s8_with_float_bias(fp32_onnx, tmp_path):
    scheme = load_target("jetson-orin-nano").quantization
    out = quantize_to_qdq(fp32_onnx, tmp_path / "q.onnx", _x(64), scheme, calib_samples=32)
    zp, bias_dq, inits, m = qdq_types(out)
    assert zp == {"int8"} and not bias_dq
    for n in m.graph.node:  # symmetric: every activation zero point is 0
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits:
            assert not inits[n.input[2]].any()


def test_excluded_nodes_stay_float(fp32_onnx, tmp_path):
    first = weighted_nodes(fp32_onnx)[0]["name"]
    out = quantize_to_qdq(fp32_onnx, tmp_path / "q.onnx", _x(32), load_target("cpu").quantization,
                          nodes_to_exclude=[first])
    m = onnx.load(str(out))
    producers = {o: n for n in m.graph.node for o in n.output}
    conv = next(n for n in m.graph.node if n.name == first)
    weight_src = producers.get(conv.input[1])
    assert weight_src is None or weight_src.op_type != "DequantizeLinear"


def test_reduce_range_follows_the_isa():
    no_vnni = {"u8s8_saturates": True, "int8_kernel": "avx2"}
    vnni = {"u8s8_saturates": False, "int8_kernel": "avx512_vnni"}
    assert reduce_range_candidates("auto", no_vnni, "onnxruntime")[0] == (True,)
    assert reduce_range_candidates("auto", vnni, "onnxruntime")[0] == (False, True)
    assert reduce_range_candidates(True, vnni, "onnxruntime")[0] == (True,)
    assert reduce_range_candidates("auto", no_vnni, "tensorrt")[0] == (False,)


def test_quantize_file_cpu_search_records_candidates_and_decision(fp32_onnx, tmp_path):
    cfg = QuantizeConfig(calibration_samples=32, max_accuracy_drop=100, min_top1_agreement=0.5, search_seconds=120)
    x = _x(96, seed=1)
    art = quantize_file(fp32_onnx, _x(32), ClassificationEvaluator(x[48:]), load_target("cpu"), cfg,
                        tmp_path / "q", log=lambda s: None, search_evaluator=ClassificationEvaluator(x[:48]))
    m = art.metrics
    assert art.path.exists() and m.decision in ("int8", "fp32") and m.reason
    rr = reduce_range_candidates("auto", int8_facts(), "onnxruntime")[0]
    assert {a["reduce_range"] for a in m.attempts if a.get("step") == "reduce_range"} == set(rr)
    assert {a["calibration"].split()[0] for a in m.attempts} >= {"minmax", "percentile", "entropy"}
    assert m.steps["bias_correction"]["why"] and "kept" in m.steps["equalize"]
    assert m.latency_ms["fp32_ms"] > 0 and m.search_seconds > 0 and m.isa["int8_kernel"]
    back = QuantizeMetrics.from_dict(m.to_dict())  # the manifest round trip
    assert back.decision == m.decision and back.steps == m.steps
    if m.decision == "int8":
        assert m.latency_ms["int8_ms"] < m.latency_ms["fp32_ms"]
        assert qdq_types(art.path)[0] == {"uint8"}


def test_fp32_ships_when_int8_is_not_faster(fp32_onnx, tmp_path, monkeypatch):
    import pipeline.bench.isolated as iso

    def slow_int8(models, feeds, cfg, options=None):
        return {"stats": {k: {"p50": 1.0 if k == "fp32" else 2.0} for k in models}}

    monkeypatch.setattr(iso, "measure_onnx_interleaved", slow_int8)
    cfg = QuantizeConfig(calibration_samples=16, max_accuracy_drop=100, min_top1_agreement=0.0, method="minmax",
                         equalize=False, bias_correction=False)
    art = quantize_file(fp32_onnx, _x(16), ClassificationEvaluator(_x(40, 2)), load_target("cpu"), cfg,
                        tmp_path / "q", log=lambda s: None)
    assert art.metrics.decision == "fp32" and "not faster" in art.metrics.reason
    assert not any(n.op_type == "QuantizeLinear" for n in onnx.load(str(art.path)).graph.node)


def test_tensorrt_target_is_judged_as_fake_quant(fp32_onnx, tmp_path):
    cfg = QuantizeConfig(calibration_samples=16, max_accuracy_drop=100, min_top1_agreement=0.0, method="minmax")
    art = quantize_file(fp32_onnx, _x(16), ClassificationEvaluator(_x(40, 3)), load_target("x86-gpu"), cfg,
                        tmp_path / "q", log=lambda s: None)
    m = art.metrics
    assert m.fake_quant and m.decision == "int8" and m.latency_ms is None
    assert "fp" in m.float_layers_precision and m.scheme.reduce_range is False
    zp, bias_dq, _, _ = qdq_types(art.path)
    assert zp == {"int8"} and not bias_dq


def test_a_budget_that_cannot_be_met_names_the_best_and_qat(fp32_onnx, tmp_path):
    ref = {}

    def exact(predict, data):  # 1.0 only for outputs identical to the first model scored (the FP32 one)
        out = predict(data)[0]
        ref.setdefault("out", out)
        return float(np.array_equal(out, ref["out"]))

    cfg = QuantizeConfig(calibration_samples=16, max_accuracy_drop=1, method="minmax", max_float_layers=2,
                         search_seconds=60)
    ev = FunctionEvaluator(exact, _x(8, 4))
    with pytest.raises(BudgetExceeded) as e:
        quantize_file(fp32_onnx, _x(16), ev, load_target("cpu"), cfg, tmp_path / "q", log=lambda s: None,
                      search_evaluator=ev)
    msg = str(e.value)
    assert "best" in msg and "QAT needs the torch model" in msg and "layers tried" in msg
    assert not (tmp_path / "q" / "model_int8.onnx").exists()


def test_report_lists_float_layers_why_and_cost():
    from pipeline.stages.report import _scheme
    from pipeline.targets import QuantScheme

    q = QuantizeMetrics(accuracy=0.9, accuracy_fp32=0.91, drop_pp=1.0, top1_agreement=0.95, max_abs_diff=0.1,
                        excluded_nodes=["/stem/Conv"], attempts=[{}, {}], scheme=QuantScheme(), method="percentile",
                        calibration_samples=128, file_bytes=1, decision="int8", reason="INT8 1.80x faster",
                        calibration="percentile 99.999 @128", search_seconds=42.0, search_timed_out=False,
                        steps={"bias_correction": {"kept": True, "why": "corrected 49 Conv biases"}},
                        float_layers=[{"name": "/stem/Conv", "why": "keeping it in float gained +2.00 points",
                                       "cost_ms": 0.25}], isa={"reduce_range": "avx512_vnni: both measured"})
    text = _scheme(q)
    assert "`/stem/Conv` stayed in float: keeping it in float gained +2.00 points, about 0.250 ms" in text
    assert "Shipped: INT8 (INT8 1.80x faster); search 42 s over 2 candidates" in text
    assert "bias correction: kept (corrected 49 Conv biases)" in text and "avx512_vnni" in text


def test_qat_is_the_last_rung_when_ptq_misses(fp32_onnx, tmp_path, monkeypatch, external_models):
    import shutil

    import pipeline.int8.qat as qat

    calls = []

    def fake_qat(model, teacher, loader, scheme, out_path, **kw):  # stands in for the real fine-tune
        calls.append(kw)
        shutil.copyfile(fp32_onnx, out_path)  # outputs identical to FP32: meets the exact evaluator below
        return out_path

    monkeypatch.setattr(qat, "qat_to_qdq", fake_qat)
    ref = {}

    def exact(predict, data):
        out = predict(data)[0]
        ref.setdefault("out", out)
        return float(np.allclose(out, ref["out"], atol=1e-5))

    ev = FunctionEvaluator(exact, _x(8, 4))
    cfg = QuantizeConfig(calibration_samples=16, max_accuracy_drop=1, method="minmax", max_float_layers=1,
                         qat={"enabled": True, "epochs": 1, "lr": 1e-4})
    art = quantize_file(fp32_onnx, _x(16), ev, load_target("cpu"), cfg, tmp_path / "q", log=lambda s: None,
                        search_evaluator=ev, torch_model=external_models.make_student(3, 2), train_loader=[()])
    assert calls and calls[0]["epochs"] == 1 and calls[0]["example_shape"] == (2, 8, 8)
    assert art.metrics.qat["status"] == "met" and any(a.get("step") == "qat" for a in art.metrics.attempts)


def _stage_inputs(fp32, tmp_path, x, y, eval_spec=None):
    """What the run loop hands the quantize stage: the exported model, arrays as the run's data, the target."""
    from types import SimpleNamespace

    from pipeline.data.arrays import DataSplits
    from pipeline.data.load import from_arrays
    from pipeline.stages.base import Artifact, StageInputs

    k = len(x) // 2
    d = DataSplits(x[:k], y[:k], x[k:], y[k:], x[k:], y[k:], int(y.max()) + 1, [0.0], [1.0], "arrays")
    cfg = SimpleNamespace(seed=0, eval=eval_spec, benchmark=SimpleNamespace(threads=1))
    return StageInputs({"export": Artifact({"model": fp32}, "model", None)}, cfg, load_target("cpu"),
                       from_arrays(d, "none", d.digest(), kind="npz"), tmp_path, tmp_path, print)


def test_fp16_precision_writes_a_verified_fp16_model_under_the_stage_file_name(fp32_onnx, tmp_path):
    from pipeline.stages import quantize as stage
    from pipeline.stages.final import final_model

    x = _x(96, seed=3)
    y = ort_logits(fp32_onnx, x).argmax(1)  # labels the FP32 model gets right: FP16 must keep them
    cfg = QuantizeConfig(precision="fp16", max_accuracy_drop=1.0)
    art = stage.run(_stage_inputs(fp32_onnx, tmp_path, x, y), cfg, tmp_path / "q")
    out = art.path
    assert out.name == "model_int8.onnx" and not (tmp_path / "q" / "fp16_candidate.onnx").exists()
    m = onnx.load(str(out))
    assert {i.data_type for i in m.graph.initializer if i.data_type in (1, 10)} == {onnx.TensorProto.FLOAT16}
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # callers feed float32
    got = ort_logits(out, x)  # loads and runs in ONNX Runtime
    assert got.dtype == np.float32 and np.abs(got - ort_logits(fp32_onnx, x)).max() < 1e-2
    q = art.metrics
    assert isinstance(q, QuantizeMetrics) and q.decision == "fp16" and q.method == "fp16"
    assert q.accuracy_fp32 == 1.0 and q.drop_pp <= 1.0 and q.top1_agreement >= 0.95 and q.scored_by == "top-1"
    assert final_model({"quantize": art})[1] == "fp16"
    with pytest.raises(Exception, match="precision"):
        QuantizeConfig(precision="int4")


def test_fp16_that_misses_the_budget_raises_budget_exceeded(tmp_path):
    from pipeline.stages.quantize_fp16 import fp16_file

    torch.manual_seed(0)
    # 40 classes whose logits differ by ~1e-4 around 10: FP16's 2^-7 steps there flip many top-1 answers
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 40)).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.ones(40, 4) + 1e-4 * torch.randn(40, 4))
        net[1].bias.zero_()
    fp32 = tmp_path / "tied.onnx"
    export_onnx(net, (1, 2, 2), fp32, opset=17, dynamo=False, simplify=False)
    x = np.abs(np.random.default_rng(0).normal(2.5, 0.1, (64, 1, 2, 2))).astype(np.float32)
    ev = ClassificationEvaluator(x)  # no labels: the budget is top-1 agreement with FP32
    with pytest.raises(BudgetExceeded, match="FP16 model of tied.onnx misses the budget: .*top-1 agreement 0") as e:
        fp16_file(fp32, ev, load_target("cpu"), QuantizeConfig(precision="fp16", min_top1_agreement=1.0),
                  tmp_path / "q")
    assert e.value.exit_code == 1 and not (tmp_path / "q" / "model_int8.onnx").exists()
    assert not (tmp_path / "q" / "fp16_candidate.onnx").exists()
