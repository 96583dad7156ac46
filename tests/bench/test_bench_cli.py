"""`edgepipe bench` end to end on a real tiny ONNX model, and its user errors (exit 2)."""

import json
from pathlib import Path

import pytest

from pipeline.cli import main

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "trtexec"


@pytest.fixture
def model(tiny_model):
    return tiny_model


def test_bench_json_and_plot(tmp_path, model, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    rc = main(["bench", str(model), "--batch", "2", "--threads", "1", "--warmup", "3", "--iterations", "30",
               "--json", str(out), "--plot", str(png)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == "edgepipe.bench/1" and doc["model"]["runtime"] == "onnxruntime"
    lat = doc["latency"]
    assert lat["iterations"] == 30 and lat["batch"] == 2 and len(lat["samples_ms"]) == 30
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert doc["inputs"] == {"input": [2, 4]} and doc["model"]["sha256"]
    fp = doc["fingerprint"]
    assert fp["threads_used"] == 1 and fp["versions"]["onnxruntime"] and fp["cpu"]["logical_cores"] >= 1
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "p50" in capsys.readouterr().out


def test_bench_duration_and_reference_then_same_run_compare(tmp_path, model):
    out = tmp_path / "r.json"
    assert main(["bench", str(model), "--duration", "0.2", "--warmup-seconds", "0.05", "--reference", str(model),
                 "--json", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert doc["reference"]["latency"]["iterations"] > 10 and doc["latency"]["blocks"]
    verdict = tmp_path / "v.json"
    # one argument: compare the model with the reference measured in the same run
    rc = main(["bench", "compare", str(out), "--max-regression", "300%", "--json", str(verdict)])
    assert rc == 0 and json.loads(verdict.read_text())["verdict"] == "ok"


def test_import_trtexec_cli(tmp_path):
    out = tmp_path / "t.json"
    assert main(["bench", "import-trtexec", str(FIX / "trt8_2_xavier_nx_meta_tegra_1124.log"), "--json", str(out),
                 "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert doc["source"] == "trtexec" and doc["latency"]["p50"] == pytest.approx(0.572998)
    assert "latency.p90" in doc["missing"]
    # an imported device run can be gated against another import (point ratio)
    assert main(["bench", "compare", str(out), str(out)]) == 0


@pytest.mark.parametrize("argv,needle", [
    (["bench", "{tmp}/missing.onnx"], "not found"),
    (["bench", "{model}", "--runtime", "tflite"], "--runtime 'tflite' is not a runtime (allowed: onnxruntime (ort,"),
    (["bench", "{tmp}/model.tflite"], "cannot tell the runtime"),
    (["bench", "{model}", "--shape", "1x5"], "differs from the model"),
    (["bench", "{model}", "--shape", "1x4x4"], "rank"),
    (["bench", "{model}", "--shape", "banana"], "--shape"),
    (["bench", "{model}", "--iterations", "0"], "must be >= 1"),
    (["bench", "{model}", "--providers", "NoSuchExecutionProvider"], "none is available"),
    (["bench", "{model}", "--bogus-flag"], "unrecognized arguments"),
    (["bench", "import-trtexec", "{tmp}/nothing.log", "--json", "{tmp}/o.json"], "not found"),
    (["bench", "import-trtexec", "{tmp}/binary.log", "--json", "{tmp}/o.json"], "could not be read"),
    (["bench", "import-trtexec", "{tmp}/empty.log", "--json", "{tmp}/o.json"], "no trtexec performance summary"),
    (["bench", "import-trtexec", "{tmp}/empty.log"], "required: --json"),
    (["bench", "trtexec", "{tmp}/m.engine", "--trtexec", "{tmp}/no-trtexec"], "trtexec not found"),
])
def test_bad_input_exits_2(tmp_path, model, capsys, argv, needle):
    (tmp_path / "binary.log").write_bytes(b"\xff\xfe\x00\x81")
    (tmp_path / "empty.log").write_text("nothing here\n")
    (tmp_path / "model.tflite").write_bytes(b"x")
    (tmp_path / "fake.engine").write_bytes(b"not an engine")
    argv = [a.format(tmp=tmp_path, model=model) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgepipe: error:") and needle in err and "Traceback" not in err


@pytest.mark.parametrize("alias", ["ort", "ONNX", "onnxrt", "onnxruntime"])
def test_runtime_aliases(tmp_path, model, alias):
    out = tmp_path / "r.json"
    assert main(["bench", str(model), "--runtime", alias, "--iterations", "3", "--warmup", "1", "--json", str(out),
                 "--quiet"]) == 0
    assert json.loads(out.read_text())["model"]["runtime"] == "onnxruntime"


# What a TensorRT runtime says about a file that is not an engine, depending on what this machine has.
TRT_FAILURES = ("TensorRT is not importable", "no usable CUDA binding/device", "could not deserialize")


def test_engine_that_cannot_run_here_is_one_line(tmp_path, capsys):
    (tmp_path / "fake.engine").write_bytes(b"not an engine")
    assert main(["bench", str(tmp_path / "fake.engine"), "--runtime", "trt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgepipe: error:") and any(n in err for n in TRT_FAILURES) and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_engine_failure_suggests_trtexec_when_it_is_installed(tmp_path, capsys, monkeypatch):
    """A runtime whose files trtexec can time (supports_trtexec) points at `edgepipe bench trtexec`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "trtexec").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "trtexec").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    (tmp_path / "fake.engine").write_bytes(b"not an engine")
    assert main(["bench", str(tmp_path / "fake.engine")]) == 2
    err = capsys.readouterr().err
    assert f"trtexec is installed: try `edgepipe bench trtexec {tmp_path / 'fake.engine'}`" in err


def test_help(capsys):
    assert main(["bench", "--help"]) == 0
    assert "import-trtexec" in capsys.readouterr().out
    assert main(["bench"]) == 2


def test_bench_never_branches_on_a_runtime_name():
    """Runtime differences live on the runtime object (e.g. `supports_trtexec`), not in `x.runtime == "..."`."""
    import ast

    import pipeline.bench

    for path in Path(pipeline.bench.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                named = any(isinstance(s, ast.Attribute) and s.attr == "runtime" for s in sides)
                text = any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides)
                assert not (named and text), f"{path.name}:{node.lineno}"
