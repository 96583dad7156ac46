"""trtexec command lines per TensorRT version, and running a stand-in trtexec end to end."""

import json
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.bench.trtexec import TrtexecSettings, find_trtexec, run_trtexec, trtexec_bench_argv
from pipeline.cli import main
from pipeline.errors import UserError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "trtexec"


def test_trt11_flags_are_inverted():
    argv = trtexec_bench_argv("m.engine", (11, 1), TrtexecSettings(export_times="t.json", shapes="input:1x3x8x8"))
    assert argv[:3] == ["trtexec", "--loadEngine=m.engine", "--shapes=input:1x3x8x8"]
    assert "--noCudaGraph" in argv and "--includeDataTransfers" in argv
    assert "--useCudaGraph" not in argv and "--useSpinWait" not in argv and "--noDataTransfers" not in argv
    assert "--noSpinWait" not in argv  # spin-wait wanted and already the 11.x default
    assert {"--warmUp=500", "--duration=10", "--iterations=100", "--avgRuns=10", "--percentile=90,95,99",
            "--exportTimes=t.json"} <= set(argv)
    fast = trtexec_bench_argv("m.engine", (11, 0),
                              TrtexecSettings(cuda_graph=True, spin_wait=False, include_transfers=False))
    assert "--noCudaGraph" not in fast and "--noSpinWait" in fast and "--includeDataTransfers" not in fast


def test_trt10_and_older_flags():
    argv = trtexec_bench_argv("m.engine", (10, 3), TrtexecSettings(cuda_graph=True, include_transfers=False))
    assert {"--useCudaGraph", "--useSpinWait", "--noDataTransfers", "--percentile=90,95,99"} <= set(argv)
    assert "--includeDataTransfers" not in argv and "--noCudaGraph" not in argv
    old = trtexec_bench_argv("m.engine", (8, 2), TrtexecSettings())
    assert "--percentile=99" in old and "--noDataTransfers" not in old and "--useSpinWait" in old
    with pytest.raises(UserError):
        trtexec_bench_argv("m.engine", (6, 0))


def test_find_trtexec(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("pipeline.bench.trtexec.DEFAULT_LOCATIONS", (str(tmp_path / "usr/src/tensorrt/bin/trtexec"),))
    assert find_trtexec() is None
    jp = tmp_path / "usr/src/tensorrt/bin/trtexec"
    jp.parent.mkdir(parents=True)
    jp.write_text("")
    assert find_trtexec() == jp
    assert find_trtexec(str(tmp_path / "nope")) is None


FAKE = textwrap.dedent('''\
    #!{python}
    """Stand-in for trtexec: prints a real 8.5+ summary (NVIDIA/TensorRT #4177) and writes --exportTimes."""
    import json, sys
    args = sys.argv[1:]
    print("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec " + " ".join(args))
    if "--help" in args:
        sys.exit(0)
    for a in args:
        if a.startswith("--exportTimes="):
            recs = [{{"count": 4}}] + [{{"latencyMs": 7.0 + i, "computeMs": 6.9 + i}} for i in range(4)]
            json.dump(recs, open(a.split("=", 1)[1], "w"))
    sys.stdout.write(open({log!r}).read())
    print("&&&& PASSED TensorRT.trtexec [TensorRT v100300] # trtexec " + " ".join(args))
''')


def test_run_with_stand_in_trtexec(tmp_path):
    exe = tmp_path / "trtexec"
    exe.write_text(FAKE.format(python=sys.executable, log=str(FIX / "trt8_5plus_nvidia_tensorrt_4177.log")))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    doc = run_trtexec(engine, tmp_path / "run", TrtexecSettings(duration_s=1), exe=str(exe))
    assert doc["trtexec"]["version"] == "10.3.0" and doc["trtexec"]["format"] == "8.5+"
    assert "--useSpinWait" in doc["trtexec"]["argv"]  # 10.x: spelled out
    assert doc["latency"]["iterations"] == 4 and doc["latency"]["p50"] == pytest.approx(8.5)
    assert doc["device_latency"]["p50"] == pytest.approx(8.4)
    assert doc["transfers"] == "included" and (tmp_path / "run" / "trtexec.log").is_file()
    out = tmp_path / "r.json"
    assert main(["bench", "trtexec", str(engine), "--trtexec", str(exe), "--out-dir", str(tmp_path / "run2"),
                 "--json", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["source"] == "trtexec"


def test_print_command(capsys):
    assert main(["bench", "trtexec", "m.engine", "--print-command", "11.1", "--exclude-transfers"]) == 0
    line = capsys.readouterr().out
    assert "--loadEngine=m.engine" in line and "--includeDataTransfers" not in line and "--noCudaGraph" in line
    assert main(["bench", "trtexec", "m.engine", "--print-command", "eleven"]) == 2
