"""The bootstrap regression gate on synthetic samples, and `edgepipe bench compare` exit codes."""

import json

import numpy as np
import pytest

from pipeline.bench.compare import compare_docs, parse_budget
from pipeline.bench.result import make_result
from pipeline.bench.stats import LatencyStats
from pipeline.cli import main
from pipeline.errors import UserError


def _doc(scale=1.0, seed=0, n=400, ref_scale=None, fp=None):
    rng = np.random.default_rng(seed)
    samples = (1.0 + rng.gamma(2.0, 0.03, n)) * scale  # right-skewed like real latencies
    ref = None
    if ref_scale is not None:
        ref = ("ref.onnx", LatencyStats.from_samples((0.5 + rng.gamma(2.0, 0.015, n)) * ref_scale))
    d = make_result(LatencyStats.from_samples(samples), model="m.onnx", runtime="onnxruntime", reference=ref)
    d["fingerprint"] = fp or {}
    return d


def test_unchanged_never_alarms_and_slower_always_flagged():
    for seed in range(20):
        same = compare_docs(_doc(1.0, seed + 100), _doc(1.0, seed), 0.10, seed=seed)
        assert not same["regression"], same["metrics"]
        slow = compare_docs(_doc(1.15, seed + 100), _doc(1.0, seed), 0.10, seed=seed)
        assert slow["regression"], slow["metrics"]
        assert slow["metrics"]["p50"]["ci_low"] > 1.10 and slow["exit_code"] == 1


def test_ci_brackets_the_ratio():
    v = compare_docs(_doc(1.05, 1), _doc(1.0, 2), 0.10)
    for m in ("p50", "p90"):
        e = v["metrics"][m]
        assert e["ci_low"] <= e["ratio"] <= e["ci_high"]
        assert e["method"] == "block-bootstrap"
    assert not v["regression"]


def test_reference_cancels_machine_wide_slowdown():
    """The whole machine 30 % slower: plain compare flags it, reference-normalised does not."""
    base = _doc(1.0, 1, ref_scale=1.0)
    new = _doc(1.3, 2, ref_scale=1.3)
    assert compare_docs(new, base, 0.10, use_reference=False)["regression"]
    v = compare_docs(new, base, 0.10)
    assert v["normalized_by_reference"] and not v["regression"]
    assert v["metrics"]["p50"]["ratio"] == pytest.approx(1.0, abs=0.03)
    # a real 20 % slowdown of the model alone is still caught
    assert compare_docs(_doc(1.2 * 1.3, 3, ref_scale=1.3), base, 0.10)["regression"]


def test_reference_required_but_missing():
    with pytest.raises(UserError, match="no reference"):
        compare_docs(_doc(), _doc(), use_reference=True)


def test_summary_only_results_use_point_ratio():
    a, b = _doc(1.2, 1), _doc(1.0, 2)
    a["latency"]["samples_ms"] = []
    v = compare_docs(a, b, 0.10)
    assert v["metrics"]["p50"]["method"] == "point" and v["regression"]
    assert any("without uncertainty" in w for w in v["warnings"])


def test_missing_metric_is_not_gated():
    a, b = _doc(), _doc()
    a["latency"]["p90"] = None
    v = compare_docs(a, b, 0.10)
    assert v["metrics"]["p90"]["regressed"] is None and not v["regression"]


def test_environment_differences_warned():
    v = compare_docs(_doc(fp={"cpu": {"model": "A"}}), _doc(fp={"cpu": {"model": "B"}}))
    assert any("CPU model" in d for d in v["environment_differences"])


@pytest.mark.parametrize("text,value", [("10%", 0.10), ("0.1", 0.10), ("10", 0.10), ("2.5%", 0.025)])
def test_parse_budget(text, value):
    assert parse_budget(text) == pytest.approx(value)


def test_parse_budget_rejects():
    with pytest.raises(UserError):
        parse_budget("ten")


def test_cli_exit_codes_and_verdict_json(tmp_path, capsys):
    base, same, slow = tmp_path / "b.json", tmp_path / "s.json", tmp_path / "l.json"
    for p, d in ((base, _doc(1.0, 1)), (same, _doc(1.0, 2)), (slow, _doc(1.25, 3))):
        p.write_text(json.dumps(d))
    out = tmp_path / "v.json"
    assert main(["bench", "compare", str(same), str(base), "--max-regression", "10%", "--json", str(out)]) == 0
    v = json.loads(out.read_text())
    assert v["verdict"] == "ok" and set(v["metrics"]) == {"p50", "p90"}
    assert main(["bench", "compare", str(slow), str(base), "--json", str(out), "--plot", str(tmp_path / "c.png")]) == 1
    v = json.loads(out.read_text())
    assert v["regression"] and v["metrics"]["p50"]["ci_low"] > 1.1
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert "REGRESSION" in capsys.readouterr().out
    assert main(["bench", "compare", str(slow), str(base), "--max-regression", "50%"]) == 0
    assert main(["bench", "compare", str(slow), str(base), "--metrics", "p42"]) == 2


def test_cli_bad_inputs(tmp_path):
    good = tmp_path / "g.json"
    good.write_text(json.dumps(_doc()))
    assert main(["bench", "compare", str(tmp_path / "none.json"), str(good)]) == 2
    (tmp_path / "foreign.json").write_text('{"hello": 1}')
    assert main(["bench", "compare", str(tmp_path / "foreign.json"), str(good)]) == 2
    (tmp_path / "broken.json").write_text("{")
    assert main(["bench", "compare", str(good), str(tmp_path / "broken.json")]) == 2
    assert main(["bench", "compare", str(good)]) == 2
    assert main(["bench", "compare", str(good), str(good), "--max-regression", "lots"]) == 2


def test_transfers_must_match_for_device_timing():
    a, b = _doc(1.0, 1), _doc(1.0, 2)
    for d, t in ((a, "included"), (b, "excluded")):
        d["transfers"] = t
        d["device_latency"] = dict(d["latency"])
    with pytest.raises(UserError, match="not comparable"):
        compare_docs(a, b, timing="device")
    v = compare_docs(a, b, timing="host")
    assert any("copies" in w for w in v["warnings"])
    b["transfers"] = "included"
    assert not compare_docs(a, b, timing="device")["regression"]
