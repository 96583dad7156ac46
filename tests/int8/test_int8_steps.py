"""The INT8 search's parts: evaluators, one-pass calibration statistics, CLE, bias correction, sensitivity."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from pipeline.int8.bias_correction import correct_biases
from pipeline.int8.calibrate import ActivationStats, CalibCandidate
from pipeline.int8.equalize import equalize
from pipeline.int8.evaluate import Budget, ClassificationEvaluator, EvalResult, FunctionEvaluator
from pipeline.int8.qdq import RunSpec, build_qdq, predictor, preprocess
from pipeline.int8.sensitivity import fallback_order, rank_layers
from pipeline.targets import load_target


class _Net(torch.nn.Module):
    """conv -> ReLU -> depthwise -> ReLU6 -> conv: one exact CLE pair, one ReLU6 pair."""

    def __init__(self, relu6_scale: float = 1.0) -> None:
        super().__init__()
        nn = torch.nn
        self.c1, self.dw = nn.Conv2d(2, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c2, self.fc = nn.Conv2d(8, 6, 1), nn.Linear(6, 3)
        with torch.no_grad():  # unequal channel ranges: what CLE is for
            self.c1.weight.mul_(torch.linspace(0.05, 4.0, 8).view(8, 1, 1, 1))
            self.dw.weight.mul_(relu6_scale)
        self.relu6 = nn.ReLU6()

    def forward(self, x):
        y = self.relu6(self.dw(torch.relu(self.c1(x))))
        return self.fc(self.c2(y).mean((2, 3)))


def _export(net, path):
    net.eval()
    torch.onnx.export(net, torch.randn(2, 2, 8, 8), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}}, opset_version=17, dynamo=False)
    return path


@pytest.fixture()
def model(tmp_path):
    torch.manual_seed(0)
    return preprocess(_export(_Net(), tmp_path / "raw.onnx"), tmp_path / "fp32.onnx")


def _x(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 2, 8, 8)).astype(np.float32)


def _run(path, x):
    return predictor(path, RunSpec())(x)[0]


def test_classification_evaluator_scores_agreement_and_accuracy():
    x = _x(10)
    ev = ClassificationEvaluator(x, y=np.zeros(10, int))
    ref = ev.bind_reference(lambda b: [np.tile([[1.0, 0.0]], (len(b), 1))])
    assert ref.accuracy == 1.0 and ref.agreement == 1.0
    half = ev.evaluate(lambda b: [np.array([[1.0, 0.0] if i % 2 else [0.0, 1.0] for i in range(len(b))])])
    assert half.agreement == pytest.approx(0.5) and half.score == half.accuracy
    a, b = ev.split(0.3)
    assert len(a) == 3 and len(b) == 7 and not np.shares_memory(a.x, b.x) or a.x is not b.x


def test_budget_names_what_is_missed():
    ref, got = EvalResult(score=0.9, agreement=1.0), EvalResult(score=0.85, agreement=0.8)
    misses = Budget(max_accuracy_drop=1.0, min_top1_agreement=0.9).misses(ref, got)
    assert len(misses) == 2 and "drop 5.00 points" in misses[0] and "0.8000" in misses[1]
    assert Budget(max_accuracy_drop=6.0).misses(ref, got) == []


def test_function_evaluator_refuses_scores_outside_0_1():
    from pipeline.errors import UserError

    with pytest.raises(UserError, match=r"\[0, 1\]"):
        FunctionEvaluator(lambda predict, data: 3.0, [1, 2]).bind_reference(lambda x: [x])
    a, b = FunctionEvaluator(lambda p, d: 0.5, list(range(10))).split(0.5)
    assert a.data == [0, 1, 2, 3, 4] and b.data == [5, 6, 7, 8, 9]


def test_one_statistics_pass_serves_every_method_and_sample_count(model, tmp_path):
    stats = ActivationStats(model, _x(32), (8, 32), tmp_path, "input", batch=8)
    assert stats.sample_counts == [8, 32]
    mm8, mm32 = (stats.ranges(CalibCandidate("minmax", n)) for n in (8, 32))
    pct = stats.ranges(CalibCandidate("percentile", 32, 99.0))
    ent = stats.ranges(CalibCandidate("entropy", 32))
    name = "input"
    lo8, hi8 = mm8[name].range_value
    lo32, hi32 = mm32[name].range_value
    assert lo32 <= lo8 and hi32 >= hi8  # more images only widen MinMax
    assert np.isclose(hi32, _x(32).max(), rtol=1e-6)  # MinMax from the histogram is the exact maximum
    assert pct[name].range_value[1] < hi32 and ent[name].range_value[1] <= hi32
    cache = tmp_path / "r.json"
    method = stats.write_cache(CalibCandidate("percentile", 32, 99.9), cache)
    out = build_qdq(model, tmp_path / "q.onnx", cache, method, load_target("cpu").quantization, False)
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)


def test_cle_is_exact_on_relu_pairs_and_leaves_firing_relu6_alone(tmp_path):
    torch.manual_seed(0)
    fp32 = preprocess(_export(_Net(relu6_scale=30.0), tmp_path / "raw.onnx"), tmp_path / "fp32.onnx")
    stats = ActivationStats(fp32, _x(16), (16,), tmp_path, "input")
    out, why = equalize(fp32, tmp_path / "eq.onnx", stats)
    assert out is not None and "equalized 1" in why and "ReLU6" in why  # the dw -> ReLU6 pair clips: left alone
    x = _x(8, 1)
    np.testing.assert_allclose(_run(out, x), _run(fp32, x), rtol=1e-4, atol=1e-4)
    w = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    conv = [n for n in onnx.load(str(out)).graph.node if n.op_type == "Conv"]
    r1 = np.abs(w[conv[0].input[1]]).reshape(8, -1).max(1)
    r2 = np.abs(w[conv[1].input[1]]).reshape(8, -1).max(1)
    np.testing.assert_allclose(r1, r2, rtol=1e-4)  # both sides of the pair now share each channel's range


def _with_weights(path, weights, out):
    """`path` with its Conv weights replaced (float activations: only the weight rounding differs)."""
    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    for n in m.graph.node:
        if n.name in weights:
            inits[n.input[1]].CopyFrom(numpy_helper.from_array(weights[n.name].astype(np.float32), n.input[1]))
    onnx.save(m, str(out))
    return out


class _Pointwise(torch.nn.Module):
    """1x1 convs only: no padding, so the corrected mean is exact to first order."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.fc = torch.nn.Conv2d(2, 16, 1), torch.nn.Conv2d(16, 6, 1), torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.c2(torch.relu(self.c1(x))).mean((2, 3)))


def test_bias_correction_removes_the_mean_shift_of_rounded_weights(tmp_path):
    from pipeline.int8.bias_correction import _dequantized_weights

    torch.manual_seed(0)
    model = preprocess(_export(_Pointwise(), tmp_path / "raw.onnx"), tmp_path / "fp32.onnx")
    stats = ActivationStats(model, _x(32), (32,), tmp_path, "input")
    cache = tmp_path / "r.json"
    method = stats.write_cache(CalibCandidate("minmax", 32), cache)
    q = build_qdq(model, tmp_path / "q.onnx", cache, method, load_target("cpu").quantization, True)
    out, why = correct_biases(model, q, tmp_path / "bc.onnx", _x(64))
    assert out is not None and "corrected 2" in why
    wq = _dequantized_weights(q)
    rounded = _with_weights(model, wq, tmp_path / "rounded.onnx")
    corrected = _with_weights(out, wq, tmp_path / "rounded_corrected.onnx")
    x = _x(256, 5)
    ref = _run(model, x)
    shift_before = np.abs((_run(rounded, x) - ref).mean(0)).sum()
    shift_after = np.abs((_run(corrected, x) - ref).mean(0)).sum()
    assert shift_after < 0.5 * shift_before


def test_sensitivity_ranks_the_helpful_layer_first():
    nodes = [{"name": n, "op": "Conv", "params": 1, "macs": m} for n, m in (("a", 10), ("b", 5), ("c", 1))]
    gains = {"a": 0.0, "b": 0.1, "c": -0.2}

    def score(exclude):
        return {"score": 0.5 + sum(gains[n] for n in exclude), "snr_db": 10.0}

    ranked = rank_layers(nodes, {"score": 0.5, "snr_db": 10.0}, score, fixed=(), log=lambda s: None)
    assert [r["name"] for r in ranked][0] == "b"
    assert fallback_order(ranked) == [["b"]]  # a layer whose float copy did not help is never added


def test_big_nets_are_probed_in_runs_then_halves():
    nodes = [{"name": f"l{i}", "op": "Conv", "params": 1, "macs": 1} for i in range(32)]

    def score(exclude):  # only layers l0..l1 help, and only together with their run
        return {"score": 0.5 + (0.1 if {"l0", "l1"} <= set(exclude) else 0.0), "snr_db": 10.0}

    probes = []
    ranked = rank_layers(nodes, {"score": 0.5, "snr_db": 10.0}, lambda e: probes.append(e) or score(e), fixed=(),
                         log=lambda s: None)
    assert len(probes) == 8 + 2  # 8 runs of 4 layers, then the helpful run's two halves
    assert fallback_order(ranked)[0] == ["l0", "l1"]
