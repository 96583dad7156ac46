"""The trtexec log parser on real logs from public issues (tests/fixtures/trtexec/SOURCES.md)."""

import json
from pathlib import Path

import pytest

from pipeline.bench.trtexec_log import import_trtexec, read_export_times
from pipeline.bench.trtexec_parse import decode_version, parse_log_text
from pipeline.errors import UserError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "trtexec"

# file -> (format, jetson, latency {field: value}, device {field: value} or None, throughput qps)
EXPECTED = {
    "trt7_xavier_agx_tensorrtx_707.log": (
        "7.x", True,
        {"min": 6.14319, "max": 9.15771, "mean": 6.84532, "p50": 6.60986, "p99": 8.90259, "p90": None},
        None, 145.5),
    "trt7_nvidia_tensorrt_2054.log": (
        "7.x", False,
        {"min": 1.64058, "max": 6.2915, "mean": 1.66069, "p50": 1.65601, "p99": 1.67065},
        None, 0.0),
    "trt8_0_gtx1080ti_nvidia_tensorrt_1221.log": (
        "8.0-8.2", False,
        {"min": 634.644, "max": 638.123, "mean": 636.196, "p50": 636.003, "p99": 638.123, "p95": None},
        None, 1.57184),
    "trt8_2_xavier_nx_meta_tegra_1124.log": (
        "8.0-8.2", True,
        {"min": 0.564209, "max": 0.593018, "mean": 0.573891, "p50": 0.572998, "p99": 0.587769, "p90": None},
        {"min": 0.554932, "p50": 0.564087, "p99": 0.578552}, 27207.0),
    "trt8_4_xavier_agx_meta_tegra_952.log": (
        "8.4", True,
        {"min": 0.387207, "max": 0.447357, "mean": 0.402238, "p50": 0.401947, "p99": 0.420288, "p90": None},
        {"mean": 0.388221, "p50": 0.388443, "p99": 0.393188}, 41087.7),
    "trt8_4_yolov7_329.log": (
        "8.4", False,
        {"min": 1.3476, "max": 1.5657, "mean": 1.38629, "p50": 1.38037, "p99": 1.55853},
        {"p50": 1.38037}, 716.632),
    "trt8_5_xavier_agx_meta_tegra_1150.log": (
        "8.5+", True,
        {"min": 0.369385, "max": 2.36157, "mean": 0.386481,
         "p50": 0.385986, "p90": 0.391113, "p95": 0.393066, "p99": 0.404907},
        {"p50": 0.369873, "p95": 0.374756, "p99": None}, 43073.6),
    "trt8_6_agx_orin_meta_tegra_community_113.log": (
        "8.5+", True,
        {"min": 4.81763, "max": 4.86572, "mean": 4.83767,
         "p50": 4.83752, "p90": 4.84772, "p95": 4.85034, "p99": 4.85547},
        None, 208.729),
    "trt8_5plus_nvidia_tensorrt_4177.log": (
        "8.5+", False,
        {"min": 5.38672, "max": 13.3664, "mean": 7.60628,
         "p50": 7.16092, "p90": 10.2996, "p95": 10.8698, "p99": 12.9675},
        {"min": 5.34595, "p90": 10.2881, "p99": 12.9485}, 130.298),
    "trt8_5plus_ptlflow_65.log": (
        "8.5+", False,
        {"min": 30.1348, "max": 30.887, "mean": 30.7571,
         "p50": 30.7585, "p90": 30.8303, "p95": 30.8396, "p99": 30.8523},
        {"p50": 30.333, "p99": 30.4204}, 32.7261),
}


def test_fixture_coverage():
    """At least 5 real logs, 3 format generations, 2 from Jetsons; every fixture is cited."""
    assert len(EXPECTED) >= 5
    assert len({v[0] for v in EXPECTED.values()}) >= 3
    assert sum(v[1] for v in EXPECTED.values()) >= 2
    sources = (FIX / "SOURCES.md").read_text()
    for name in EXPECTED:
        assert (FIX / name).is_file()
        assert name in sources, f"{name} is not cited in SOURCES.md"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_log_numbers(name):
    fmt, _jetson, lat, dev, qps = EXPECTED[name]
    doc = import_trtexec(FIX / name)
    assert doc["trtexec"]["format"] == fmt
    assert doc["trtexec"]["throughput_qps"] == pytest.approx(qps)
    for k, v in lat.items():
        if v is None:
            assert doc["latency"][k] is None and f"latency.{k}" in doc["missing"]
        else:
            assert doc["latency"][k] == pytest.approx(v)
    if dev is None:
        assert doc["device_latency"] is None and "device_latency" in doc["missing"]
    else:
        for k, v in dev.items():
            if v is None:
                assert doc["device_latency"][k] is None and f"device_latency.{k}" in doc["missing"]
            else:
                assert doc["device_latency"][k] == pytest.approx(v)
    # no per-iteration times: std / cv are unknown and said to be
    assert doc["latency"]["std"] is None and "latency.cv" in doc["missing"]


def test_end_to_end_lines_by_generation():
    e2e_82 = import_trtexec(FIX / "trt8_2_xavier_nx_meta_tegra_1124.log")["end_to_end_latency"]
    assert e2e_82["p50"] == pytest.approx(0.585938) and e2e_82["p99"] == pytest.approx(0.601685)
    e2e_7 = import_trtexec(FIX / "trt7_xavier_agx_tensorrtx_707.log")["end_to_end_latency"]
    assert e2e_7["max"] == pytest.approx(9.69702) and e2e_7["p99"] == pytest.approx(8.97888)
    assert import_trtexec(FIX / "trt8_4_xavier_agx_meta_tegra_952.log")["end_to_end_latency"] is None


def test_version_batch_and_transfers():
    doc = import_trtexec(FIX / "trt8_4_xavier_agx_meta_tegra_952.log")
    assert doc["trtexec"]["version"] == "8.4.0"
    assert doc["latency"]["batch"] == 16
    # implicit batch (--batch=16): trtexec's qps already counts samples
    assert doc["latency"]["throughput_ips"] == pytest.approx(41087.7)
    assert doc["transfers"] == "included"
    assert doc["model"]["path"] == "mnist16.trt"
    # H2D and D2H all zero: the run excluded transfers
    assert import_trtexec(FIX / "trt8_4_yolov7_329.log")["transfers"] == "excluded"
    assert import_trtexec(FIX / "trt8_4_yolov7_329.log")["trtexec"]["gpu_compute_cv"] == pytest.approx(0.0210486)
    doc = import_trtexec(FIX / "trt8_4_yolov7_329.log", batch=4)
    assert doc["latency"]["throughput_ips"] == pytest.approx(716.632 * 4)


def test_decode_version():
    assert decode_version("8400") == (8, 4, 0)
    assert decode_version("8001") == (8, 0, 1)
    assert decode_version("100200") == (10, 2, 0)
    assert decode_version("110100") == (11, 1, 0)


def test_export_times_give_full_stats(tmp_path):
    recs = [{"count": 5}] + [
        {"startEnqMs": i, "endEnqMs": i + 0.1, "startComputeMs": i, "endComputeMs": i + 1.0 + i / 100,
         "latencyMs": 1.2 + i / 100, "computeMs": 1.0 + i / 100, "h2dMs": 0.1, "d2hMs": 0.1}
        for i in range(5)
    ]
    times = tmp_path / "times.json"
    times.write_text(json.dumps(recs))
    assert read_export_times(times)["latency"] == pytest.approx([1.2, 1.21, 1.22, 1.23, 1.24])
    doc = import_trtexec(FIX / "trt8_5plus_nvidia_tensorrt_4177.log", times)
    assert doc["latency"]["iterations"] == 5
    assert doc["latency"]["p50"] == pytest.approx(1.22)
    assert doc["latency"]["cv"] is not None and doc["latency"]["samples_ms"]
    assert doc["device_latency"]["p50"] == pytest.approx(1.02)
    assert "latency.cv" not in doc["missing"]


def test_compute_only_times(tmp_path):
    """Records with only start/endComputeMs (no latencyMs) still give device samples."""
    times = tmp_path / "t.json"
    times.write_text(json.dumps([{"startComputeMs": 0, "endComputeMs": 2.0},
                                 {"startComputeMs": 5, "endComputeMs": 7.5}]))
    assert read_export_times(times) == {"gpu_compute": [2.0, 2.5]}


@pytest.mark.parametrize("content", ["", "just some text\nwith no summary\n", "[I] Latency: min = 1 ms"])
def test_no_summary_is_user_error(tmp_path, content):
    log = tmp_path / "x.log"
    log.write_text(content)
    with pytest.raises(UserError, match="no trtexec performance summary"):
        import_trtexec(log)


def test_unreadable_inputs(tmp_path):
    with pytest.raises(UserError, match="not found"):
        import_trtexec(tmp_path / "nope.log")
    binary = tmp_path / "bin.log"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(UserError, match="could not be read"):
        import_trtexec(binary)
    bad = tmp_path / "t.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_export_times(bad)


def test_parse_summary_only_text():
    r = parse_log_text("=== Performance summary ===\nThroughput: 10 qps\n"
                       "Latency: min = 1 ms, max = 3 ms, mean = 2 ms, median = 2 ms, percentile(99%) = 3 ms\n")
    assert r["format"] == "8.4" and r["metrics"]["latency"]["p50"] == 2.0
