"""LatencyStats, make_feeds, measure and measure_interleaved (fake runtimes: no timing assertions)."""

import time

import numpy as np
import pytest

from pipeline.bench.harness import BenchConfig, make_feeds, measure, measure_interleaved, parse_shape
from pipeline.bench.stats import LatencyStats
from pipeline.errors import UserError
from pipeline.runtimes.base import TensorSpec


class FakeRuntime:
    """Counts calls; optionally reports a device time and rejects wrong shapes like a runtime."""

    runtime = "fake"

    def __init__(self, device_ms=None, want=(1, 3)):
        self.calls = 0
        self.device_ms = device_ms
        self.want = want
        if device_ms is not None:
            self.last_device_ms = None

    def inputs(self):
        return [TensorSpec("x", (None, 3), "float32")]

    def infer(self, feeds):
        if feeds["x"].shape[1:] != self.want[1:]:
            raise ValueError(f"Got invalid dimensions for input: x, expected {self.want}")
        self.calls += 1
        if self.device_ms is not None:
            self.last_device_ms = self.device_ms
        return [feeds["x"]]

    def describe(self):
        return {"runtime": "fake", "transfers": "excluded" if self.device_ms is not None else "n/a"}


def test_stats_from_samples_match_numpy():
    s = [1.0, 2.0, 3.0, 4.0, 10.0]
    st = LatencyStats.from_samples(s, batch=2, wall_s=0.1)
    assert st.iterations == 5 and st.min == 1.0 and st.max == 10.0
    assert st.p50 == pytest.approx(np.percentile(s, 50)) and st.p90 == pytest.approx(np.percentile(s, 90))
    assert st.p99 == pytest.approx(np.percentile(s, 99))
    assert st.std == pytest.approx(np.std(s, ddof=1)) and st.cv == pytest.approx(np.std(s, ddof=1) / 4.0)
    assert st.throughput_ips == pytest.approx(2 * 5 / 0.1)
    d = st.to_dict()
    assert {"unit", "batch", "iterations", "min", "mean", "p50", "p90", "p95", "p99", "max", "std", "cv",
            "throughput_ips", "samples_ms"} <= set(d)
    assert LatencyStats.from_dict(d).to_dict() == d


def test_measure_counts_and_device_time():
    r = FakeRuntime(device_ms=0.5)
    feeds = make_feeds(r.inputs(), batch=4)
    st = measure(r, feeds, BenchConfig(warmup=3, iterations=17))
    assert r.calls == 1 + 3 + 17  # first (checking) call, warm-up, timed
    assert st.iterations == 17 and st.batch == 4 and len(st.samples_ms) == 17
    assert st.device is not None and st.device.p50 == 0.5 and st.transfers == "excluded"
    assert st.to_dict()["device"]["p50"] == 0.5


def test_measure_duration_and_warmup_seconds():
    r = FakeRuntime()
    t0 = time.perf_counter()
    st = measure(r, make_feeds(r.inputs()), BenchConfig(warmup_seconds=0.05, duration_s=0.1))
    assert time.perf_counter() - t0 >= 0.15
    assert st.iterations >= 10 and st.device is None


def test_wrong_shape_is_user_error():
    r = FakeRuntime(want=(1, 3))
    with pytest.raises(UserError, match="rejected inputs"):
        measure(r, {"x": np.zeros((1, 5), np.float32)}, BenchConfig(iterations=2))


def test_interleaved_gives_every_model_its_iterations():
    a, b, c = FakeRuntime(), FakeRuntime(), FakeRuntime(device_ms=1.0)
    feeds = {k: make_feeds(a.inputs()) for k in "abc"}
    res = measure_interleaved({"a": a, "b": b, "c": c}, feeds, BenchConfig(warmup=2, iterations=53))
    assert list(res) == ["a", "b", "c"]
    assert all(s.iterations == 53 for s in res.values())
    assert a.calls == b.calls == 1 + 2 + 53
    assert res["c"].device is not None and res["a"].device is None
    with pytest.raises(UserError, match="no feeds"):
        measure_interleaved({"a": a}, {}, BenchConfig(iterations=2))


def test_interleaved_duration():
    a, b = FakeRuntime(), FakeRuntime()
    feeds = {k: make_feeds(a.inputs()) for k in "ab"}
    res = measure_interleaved({"a": a, "b": b}, feeds, BenchConfig(warmup=1, duration_s=0.1))
    assert res["a"].iterations > 10 and res["b"].iterations > 10


@pytest.mark.parametrize("cfg", [BenchConfig(iterations=0), BenchConfig(warmup=-1), BenchConfig(duration_s=0),
                                 BenchConfig(threads=0)])
def test_config_validation(cfg):
    with pytest.raises(UserError):
        cfg.validate()


def test_make_feeds_shapes_and_errors():
    specs = [TensorSpec("input", (None, 3, 8, 8), "float32"), TensorSpec("ids", (None, 4), "int64")]
    f = make_feeds(specs, batch=2)
    assert f["input"].shape == (2, 3, 8, 8) and f["input"].dtype == np.float32
    assert f["ids"].shape == (2, 4) and f["ids"].dtype == np.int64
    assert make_feeds(specs, {None: (5, 3, 8, 8)})["input"].shape == (5, 3, 8, 8)
    assert np.array_equal(make_feeds(specs)["input"], make_feeds(specs)["input"])  # seeded
    with pytest.raises(UserError, match="dimension 1"):
        make_feeds(specs, {"input": (1, 4, 8, 8)})
    with pytest.raises(UserError, match="rank"):
        make_feeds(specs, {"input": (1, 3, 8)})
    with pytest.raises(UserError, match="model's inputs"):
        make_feeds(specs, {"nope": (1, 3, 8, 8)})
    with pytest.raises(UserError, match="dynamic dimension 2"):
        make_feeds([TensorSpec("seq", (None, 3, None), "float32")])
    with pytest.raises(UserError, match="static batch"):
        make_feeds([TensorSpec("x", (1, 3), "float32")], batch=4)


def test_parse_shape():
    assert parse_shape("1x3x224x224") == (None, (1, 3, 224, 224))
    assert parse_shape("input:2x3") == ("input", (2, 3))
    for bad in ("1xax3", "0x3", ""):
        with pytest.raises(UserError):
            parse_shape(bad)
