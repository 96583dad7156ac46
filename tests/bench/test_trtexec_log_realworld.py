"""The trtexec log parser on the messier real logs: TensorRT 10.x, several runs in one file, odd
prefixes, CRLF, pasted posts that lost their `=` signs, batch and streams, failed runs, --dumpProfile
tables, and --exportTimes files (tests/fixtures/trtexec/SOURCES.md says where each comes from)."""

import json
from pathlib import Path

import pytest

from pipeline.bench.trtexec_log import import_trtexec, read_export_times
from pipeline.bench.trtexec_parse import parse_log_text, parse_profile
from pipeline.errors import UserError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "trtexec"

# file -> (format, version, qps, latency {field: value}, device {field: value}, walltime s, GPU CV)
EXPECTED = {
    "trt10_3_jetson_jp6_resnet50.log": (
        "8.5+", "10.3.0", 318.007,
        {"min": 3.12671, "max": 3.15479, "mean": 3.14068,
         "p50": 3.14062, "p90": 3.14587, "p95": 3.14771, "p99": 3.15039},
        {"p50": 3.14062, "p99": 3.15039}, 3.00622, None),
    "trt10_3_jetson_jp6_resnet50_crlf.log": (
        "8.5+", "10.3.0", 318.007, {"p50": 3.14062, "p90": 3.14587, "max": 3.15479}, {"mean": 3.14068}, 3.00622, None),
    "trt10_9_fcn_resnet101_b34.log": (
        "8.5+", "10.9.0", 8.66824,
        {"min": 110.946, "max": 115.703, "mean": 112.938,
         "p50": 112.567, "p90": 114.427, "p95": 115.415, "p99": 115.703},
        {"min": 109.522, "p50": 111.208, "p95": 114.115}, 3.34555, 0.0108662),
    "trt10_0_plugins_segfault_after_pass.log": (
        "8.5+", "10.0.1", 742.821,
        {"min": 1.23303, "max": 4.12598, "mean": 1.73074,
         "p50": 1.38422, "p90": 2.68469, "p95": 2.87158, "p99": 3.07971},
        {"p50": 0.904633, "p99": 2.62042}, 3.00476, 0.43467),
    "trt8_6_a100_two_summaries_3364.log": (  # the second (dynamic-shape) run's summary
        "8.5+", None, 11.7297,
        {"min": 84.5625, "max": 95.9257, "mean": 85.2279,
         "p50": 84.7446, "p90": 86.5833, "p95": 87.4399, "p99": 95.9257},
        {"p50": 84.6118, "p99": 95.7728}, 3.1544, None),
    "trt8_4_m40_batch8192_streams8.log": (  # the fourth (fp32) run's summary
        "8.4", None, 1.24417e8,
        {"min": 0.395233, "max": 1.01245, "mean": 0.541006, "p50": 0.540039, "p99": 0.636841, "p90": None},
        {"mean": 0.519689, "p99": 0.615234}, 3.00139, 0.0572335),
    "trt8_5plus_orin_two_warnings.log": (
        "8.5+", None, 24.4584,
        {"min": 39.4309, "max": 48.812, "mean": 42.6834, "p50": 42.4526, "p90": 45.2621, "p95": 47.5834, "p99": 48.812},
        {"mean": 40.6098, "p90": 43.1836}, 3.10731, 0.0558526),
    "trt8_x_yolov10_463.log": (
        "8.4", None, 759.832,
        {"min": 2.02026, "max": 62.6002, "mean": 2.13468, "p50": 2.09521, "p99": 2.16016, "p95": None},
        {"p50": 1.26953, "max": 61.7889}, 3.00461, None),
    "trt8_x_jetson_mangled_yolo_on_jetson_4.log": (  # `=` signs lost, three lines run into one
        "8.4", None, 169.352,
        {"min": 5.38959, "max": 6.19507, "mean": 5.93288, "p50": 6.02185, "p99": 6.17407},
        {"min": 3.17834, "p99": 3.87793}, 3.05281, 0.0555763),
    "trt7_grep_context_googlenet_transitions.log": (  # `grep -C 4 mean` output, "--" between chunks
        "7.x", None, 383.698,
        {"min": 2.38086, "max": 7.18164, "mean": 2.56869, "p50": 2.50391, "p99": 3.17871, "p90": None},
        {"min": 2.33887, "max": 7.11914, "mean": 2.51739, "p50": 2.45142, "p99": 3.10742}, 26.0622, None),
    "trt7_indented_markdown_yolov4.log": (  # every line indented 4 spaces (a markdown list)
        "7.x", None, 0.0,
        {"min": 4.34442, "max": 7.12915, "mean": 4.52398, "p50": 4.49951, "p99": 5.46606},
        {"min": 4.2439, "max": 7.02356, "mean": 4.42492, "p50": 4.40088}, 3.00956, None),
    "trt8_5plus_ais_bench_prefixed.log": (  # "[INFO] [date] [I]" prefixes, summary cut after Latency
        "8.5+", None, 120.699,
        {"min": 9.11414, "max": 11.7442, "mean": 9.81005,
         "p50": 9.76404, "p90": 10.1075, "p95": 10.1624, "p99": 11.4742},
        None, None, None),
}


def test_sources_cite_every_fixture():
    sources = (FIX / "SOURCES.md").read_text()
    for name in list(EXPECTED) + sorted(p.name for p in FIX.glob("*.log")) + sorted(p.name for p in FIX.glob("*.json")):
        assert name in sources, f"{name} is not cited in SOURCES.md"
    assert len(list(FIX.glob("*.log"))) >= 18


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_log_numbers(name):
    fmt, version, qps, lat, dev, wall, cv = EXPECTED[name]
    doc = import_trtexec(FIX / name)
    t = doc["trtexec"]
    assert (t["format"], t["version"]) == (fmt, version)
    assert t["throughput_qps"] == pytest.approx(qps)
    assert t["walltime_s"] == (pytest.approx(wall) if wall else None)
    assert t["gpu_compute_cv"] == (pytest.approx(cv) if cv else None)
    for k, v in lat.items():
        assert doc["latency"][k] == (pytest.approx(v) if v is not None else None), k
        assert (f"latency.{k}" in doc["missing"]) == (v is None)
    if dev is None:
        assert doc["device_latency"] is None and "device_latency" in doc["missing"]
    else:
        for k, v in dev.items():
            assert doc["device_latency"][k] == pytest.approx(v), k


def test_crlf_variant_reads_like_the_original():
    a, b = (import_trtexec(FIX / n)
            for n in ("trt10_3_jetson_jp6_resnet50.log", "trt10_3_jetson_jp6_resnet50_crlf.log"))
    assert b"\r\n" in (FIX / "trt10_3_jetson_jp6_resnet50_crlf.log").read_bytes()
    assert a["latency"] == b["latency"] and a["trtexec"]["summary"] == b["trtexec"]["summary"]
    assert b["trtexec"]["command"].endswith("--noDataTransfers --iterations=2")  # no stray "\r"


def test_utf16_log_as_powershell_writes_it(tmp_path):
    """`trtexec ... > log.txt` in Windows PowerShell 5 writes UTF-16 with a BOM (constructed here
    from a real log)."""
    log = tmp_path / "ps.log"
    log.write_bytes((FIX / "trt10_9_fcn_resnet101_b34.log").read_text(encoding="utf-8").encode("utf-16"))
    assert import_trtexec(log)["latency"]["p50"] == pytest.approx(112.567)


def test_several_runs_in_one_file_read_the_last_and_say_so():
    doc = import_trtexec(FIX / "trt8_6_a100_two_summaries_3364.log")
    assert doc["trtexec"]["summaries_in_log"] == 2
    assert any("2 performance summaries" in w for w in doc["warnings"])
    # the command is the shell line above the run (no &&&& line was posted): --shapes=x:16x40320
    assert doc["trtexec"]["command"].startswith("trtexec --onnx=models/dynamic_model.onnx")
    assert doc["latency"]["batch"] == 16 and doc["trtexec"]["batch_from"] == "--shapes"
    # explicit batch: trtexec's qps counts inferences of 16 samples each
    assert doc["latency"]["throughput_ips"] == pytest.approx(11.7297 * 16)


def test_implicit_batch_and_streams_throughput():
    """--batch=8192 --streams=8 on a Tesla M40: qps already counts images, and is the total over the
    8 concurrent streams: 8 streams / 0.541 ms mean latency * 8192 images = 1.21e8, close to the
    printed 1.24417e8 (it would be 1e12 if qps counted batches and we multiplied)."""
    doc = import_trtexec(FIX / "trt8_4_m40_batch8192_streams8.log")
    t = doc["trtexec"]
    assert (doc["latency"]["batch"], t["batch_from"], t["streams"], t["summaries_in_log"]) == (8192, "--batch", 8, 4)
    assert doc["latency"]["throughput_ips"] == pytest.approx(1.24417e8)
    assert 8 / (doc["latency"]["mean"] / 1000) * 8192 == pytest.approx(t["throughput_qps"], rel=0.05)
    assert t["command"] == "trtexec --loadEngine=resnet50.fp32.engine --batch=8192 --streams=8 --verbose --avgRuns=10"
    assert doc["model"]["path"] == "resnet50.fp32.engine"


def test_batch_from_the_input_binding_line():
    doc = import_trtexec(FIX / "trt10_9_fcn_resnet101_b34.log")
    assert (doc["latency"]["batch"], doc["trtexec"]["batch_from"]) == (1, "input binding")
    assert doc["latency"]["throughput_ips"] == pytest.approx(8.66824)


def test_transfers_from_flags_zeros_and_version():
    assert import_trtexec(FIX / "trt10_3_jetson_jp6_resnet50.log")["transfers"] == "excluded"  # --noDataTransfers
    assert import_trtexec(FIX / "trt10_9_fcn_resnet101_b34.log")["transfers"] == "included"  # 10.x default
    r = parse_log_text((FIX / "trt10_3_jetson_jp6_resnet50.log").read_text().replace(" --noDataTransfers", ""))
    assert r["metrics"]["h2d"]["max"] == 0 and r["metrics"]["d2h"]["max"] == 0


def test_lines_after_pass_and_non_ascii_do_not_matter():
    doc = import_trtexec(FIX / "trt10_0_plugins_segfault_after_pass.log")
    assert doc["trtexec"]["command"].endswith("--fp16") and "段错误" not in doc["trtexec"]["command"]
    assert any("GPU compute time" in w for w in doc["warnings"])  # CV 43 %


def test_warning_between_summary_lines():
    """No posted log had one; a [W] line inserted into a real summary (constructed) is skipped."""
    text = (FIX / "trt8_5plus_orin_two_warnings.log").read_text().splitlines()
    at = next(i for i, ln in enumerate(text) if "] Latency:" in ln)
    text.insert(at, "[12/28/2023-10:51:16] [W] [TRT] Latency: something the runtime warned about, min = 1 ms")
    r = parse_log_text("\n".join(text))
    assert r["metrics"]["latency"]["p50"] == pytest.approx(42.4526)
    assert r["metrics"]["enqueue"]["mean"] == pytest.approx(40.5248)


@pytest.mark.parametrize("name, needle", [
    ("trt10_0_failed_deserialize.log", "FAILED (TensorRT 10.0.1); its last error: Inference set up failed"),
    ("trt10_3_jetson_failed_unknown_option.log",
     "FAILED (TensorRT 10.3.0); its last error: Unknown option: --explicitBatch"),
    ("trt8_6_failed_then_profile_no_summary.log", "--dumpProfile per-layer table but no summary"),
    ("trt10_7_windows_post_starts_mid_summary.log", "pass the complete trtexec output"),
])
def test_runs_without_a_summary_are_user_errors(name, needle):
    with pytest.raises(UserError, match="no trtexec performance summary") as e:
        import_trtexec(FIX / name)
    assert needle in str(e.value) and name in str(e.value)


def test_failed_runs_exit_2_from_the_cli(tmp_path, capsys):
    from pipeline.cli import main

    rc = main(["bench", "import-trtexec", str(FIX / "trt10_0_failed_deserialize.log"),
               "--json", str(tmp_path / "o.json")])
    assert rc == 2 and "FAILED" in capsys.readouterr().err and not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("prefix", ["2024-01-12T10:11:12.1234567Z ", "trt-1  | ", "\x1b[0m", "> "])
def test_prefixes_added_by_ci_docker_and_terminals(prefix):
    """A real log behind a GitHub Actions time stamp, a docker compose service name, colour codes or
    a quote marker (constructed: no such posted log was found)."""
    text = (FIX / "trt10_9_fcn_resnet101_b34.log").read_text()
    r = parse_log_text("".join(prefix + ln for ln in text.splitlines(keepends=True)))
    assert r["metrics"]["latency"]["p50"] == pytest.approx(112.567) and r["version"] == (10, 9, 0)
    assert r["throughput_qps"] == pytest.approx(8.66824) and r["gpu_cv"] == pytest.approx(0.0108662)


def test_grep_chunk_is_not_read_into_the_block_above():
    """After `--`, grep shows the tail of the Enqueue Time block ("median: 2.46094 ms") without its
    title; it used to overwrite Host Latency's median (2.50391)."""
    doc = import_trtexec(FIX / "trt7_grep_context_googlenet_transitions.log")
    assert doc["latency"]["p50"] == pytest.approx(2.50391)
    assert doc["end_to_end_latency"]["p99"] == pytest.approx(3.19629)
    assert "enqueue" not in doc["trtexec"]["summary"]


def test_hand_edited_numbers_are_flagged():
    """A posted 7.x log whose numbers were edited (max below min, mean below min)."""
    doc = import_trtexec(FIX / "trt7_edited_values_max_below_min.log")
    assert doc["latency"]["min"] == pytest.approx(4.9716) and doc["latency"]["max"] == pytest.approx(4.4915)
    w = [x for x in doc["warnings"] if "contradict" in x]
    assert len(w) == 2 and "min 4.9716 > max 4.4915" in w[0] and "GPU Compute Time" in w[1]
    assert not any("contradict" in x for x in import_trtexec(FIX / "trt8_5plus_nvidia_tensorrt_4177.log")["warnings"])


def test_summary_header_without_latency_values():
    with pytest.raises(UserError, match="no readable Latency values"):
        parse_log_text("[I] === Performance summary ===\n[I] Throughput: 10 qps\n[I] Latency: min = ? ms\n")


def test_dump_profile_table():
    lines = [ln.split("] ", 2)[-1] if ln.startswith("[") else ln
             for ln in (FIX / "trt8_6_failed_then_profile_no_summary.log").read_text().splitlines()]
    prof = parse_profile([ln.strip() for ln in lines])
    assert prof["iterations"] == 1434 and len(prof["layers"]) == 28
    assert prof["layers"][0] == {"name": "{ForeignNode[771 + (Unnamed Layer* 1) [Shuffle]...dummy_gather_]}",
                                 "time_ms": 486.12, "avg_ms": 0.339, "median_ms": 0.3389, "percent": 21.0}
    assert prof["layers"][21]["name"] == "Conv_311 || Conv_308 || Conv_307"
    assert prof["total_avg_ms"] == pytest.approx(1.6105)


def test_profile_comes_with_the_summary(tmp_path):
    """A summary followed by the profile table, as `--dumpProfile --separateProfileRun` prints them
    (the two real parts joined here: the summary of one log, the table of another)."""
    table = (FIX / "trt8_6_failed_then_profile_no_summary.log").read_text().split("\n\n", 1)[1]
    log = tmp_path / "p.log"
    log.write_text((FIX / "trt8_5plus_orin_two_warnings.log").read_text() + table)
    doc = import_trtexec(log)
    assert doc["latency"]["p50"] == pytest.approx(42.4526)
    assert doc["trtexec"]["profile"]["total_avg_ms"] == pytest.approx(1.6105)
    assert doc["trtexec"]["version"] == "8.6.1"  # from the PASSED line after the table


def test_export_times_trt10_names():
    """TensorRT 10.x record names (constructed from the Jetson log's own numbers)."""
    t = read_export_times(FIX / "times_trt10_constructed.json")
    assert t["latency"] == pytest.approx([3.12671, 3.14062, 3.14587, 3.14771, 3.15039, 3.15479, 3.14068])
    assert t["h2d"] == [0.0] * 7 and t["d2h"] == [0.0] * 7
    doc = import_trtexec(FIX / "trt10_3_jetson_jp6_resnet50.log", FIX / "times_trt10_constructed.json")
    assert doc["latency"]["iterations"] == 7 and doc["latency"]["p50"] == pytest.approx(3.14587)
    assert doc["latency"]["min"] == pytest.approx(3.12671) and doc["latency"]["cv"] is not None
    assert doc["latency"]["throughput_ips"] is None  # batch unknown: never guessed


def test_export_times_trt7_names():
    """TensorRT 7.x tracer names inMs / outMs / endToEndMs (constructed from the 7.x log's numbers)."""
    t = read_export_times(FIX / "times_trt7_constructed.json")
    assert t["h2d"] == [0.05] * 5 and t["d2h"] == [0.05] * 5
    assert t["end_to_end"] == pytest.approx([1.66368, 3.01636, 3.00909, 3.03931, 7.65552])
    assert t["gpu_compute"][0] == pytest.approx(1.54058)


def test_export_times_with_a_bad_value(tmp_path):
    f = tmp_path / "t.json"
    f.write_text(json.dumps([{"count": 1}, {"latencyMs": "n/a", "computeMs": 1.0}]))
    with pytest.raises(UserError, match="non-numeric"):
        read_export_times(f)
