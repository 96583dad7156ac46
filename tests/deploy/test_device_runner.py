"""The standalone device runner, run as the device runs it: `python device_runner.py` in the bundle.

It runs the model through the bundle's copies of edgepipe's runtimes (ort_runtime.py, trt_runtime.py) and
checks first that the device's Python has the modules the bundle needs.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from pipeline.deploy.bundle import make_bundle
from pipeline.fileio import sha256_file
from pipeline.targets import load_target


@pytest.fixture
def cpu_bundle(make_run, tmp_path):
    dist = tmp_path / "dist"
    make_bundle(make_run("arm64-cpu", accuracy=0.5), load_target("arm64-cpu"), dist)
    return dist


def _run(bundle, *args):
    # -I: isolated, like a device without edgepipe (the runner must not need the package)
    return subprocess.run([sys.executable, "-I", str(bundle / "device_runner.py"), *args],
                          capture_output=True, text=True, timeout=120)


def _ort_accuracy(bundle) -> float:
    import numpy as np
    import onnxruntime as ort

    data = np.load(bundle / "eval.npz")
    sess = ort.InferenceSession(str(bundle / "model_int8.onnx"), providers=["CPUExecutionProvider"])
    pred = sess.run(None, {"input": data["x"]})[0].argmax(1)
    return float((pred == data["y"]).mean())


def test_runner_verifies_measures_and_writes_results(cpu_bundle, tmp_path):
    out = tmp_path / "results.json"
    r = _run(cpu_bundle, "--out", str(out), "--runs", "200",
             "--expect-manifest-sha256", sha256_file(cpu_bundle / "manifest.json"))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["verified"] is True and res["target"] == "arm64-cpu"
    assert res["device"]["machine"] and res["device"]["python"] and "nvpmodel" in res["device"]
    # the target's ONNX Runtime settings (arm64-cpu: 4 threads, CPU provider), in the same results shape
    assert res["runtime"] == {"runtime": "onnxruntime", "version": res["runtime"]["version"],
                              "providers": ["CPUExecutionProvider"], "intra_op_threads": 4}
    acc = res["accuracy"]
    assert acc["samples"] == 48 and acc["expected"] == 0.5
    assert acc["accuracy"] == pytest.approx(_ort_accuracy(cpu_bundle))
    assert set(res["latency_ms"]) == {"batch_1", "batch_8"}
    for stats in res["latency_ms"].values():
        assert stats["runs"] == 200
        assert stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
        assert stats["throughput_items_per_s"] > 0 and stats["std"] >= 0
    assert res["budget"]["ms"] == 20.0 and res["budget"]["percentile"] == "p99"
    assert res["budget"]["measured_ms"] == res["latency_ms"]["batch_1"]["p99"]
    assert not list(cpu_bundle.rglob("__pycache__")), "the runner must not write into the verified bundle"


def test_runner_ships_and_uses_the_runtime_modules(cpu_bundle, tmp_path):
    """ort_runtime.py is a verbatim copy of pipeline/runtimes/ort.py; --threads overrides the target's."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    assert (cpu_bundle / "ort_runtime.py").read_bytes() == (repo / "pipeline/runtimes/ort.py").read_bytes()
    assert (cpu_bundle / "device_facts.py").read_bytes() == (repo / "pipeline/device_facts.py").read_bytes()
    assert not (cpu_bundle / "device_sessions.py").exists()
    out = tmp_path / "r.json"
    # as on a device: no edgepipe package, so ort_runtime.py runs on its own fallback definitions
    r = _run_without(cpu_bundle, "pipeline", "--out", str(out), "--threads", "1", "--no-accuracy")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["runtime"]["intra_op_threads"] == 1


def _run_without(bundle, module, *args):
    """Run the device runner with `module` hidden from imports, as on a device that lacks it."""
    runner = str(bundle / "device_runner.py")
    code = ("import runpy, sys; sys.modules[%r] = None; sys.argv = [%r] + %r; runpy.run_path(%r, run_name='__main__')"
            % (module, runner, list(args), runner))
    return subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120)


def test_runner_without_onnxruntime_says_what_to_install(cpu_bundle, tmp_path):
    out = tmp_path / "r.json"
    r = _run_without(cpu_bundle, "onnxruntime", "--out", str(out))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and "ModuleNotFoundError" not in r.stderr
    line = lines[0]
    assert line.startswith("device_runner: onnxruntime is not importable (")
    assert f"`{sys.executable} -m pip install onnxruntime`" in line
    assert "`edgepipe deploy --remote-python`" in line and "numpy" not in line
    assert not out.exists()


def test_runner_without_numpy_or_onnxruntime_lists_both(cpu_bundle):
    runner = str(cpu_bundle / "device_runner.py")
    code = ("import runpy, sys; sys.modules['numpy'] = sys.modules['onnxruntime'] = None; sys.argv = [%r]; "
            "runpy.run_path(%r, run_name='__main__')" % (runner, runner))
    r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "numpy is not importable" in r.stderr and "onnxruntime is not importable" in r.stderr
    assert "pip install numpy` and `" in r.stderr and "has them" in r.stderr


def test_runner_refuses_a_tampered_file(cpu_bundle, tmp_path):
    model = cpu_bundle / "model_int8.onnx"
    expected = sha256_file(model)
    model.write_bytes(model.read_bytes() + b"\0")
    r = _run(cpu_bundle, "--out", str(tmp_path / "r.json"))
    assert r.returncode == 3
    got = sha256_file(model)
    assert f"sha256 mismatch for model_int8.onnx on the device: expected {expected} got {got}" in r.stderr
    assert not (tmp_path / "r.json").exists()


def test_runner_refuses_a_manifest_other_than_the_hosts(cpu_bundle):
    m = json.loads((cpu_bundle / "manifest.json").read_text())
    real = sha256_file(cpu_bundle / "manifest.json")
    m["files"]["model_int8.onnx"]["sha256"] = "0" * 64  # an attacker would rewrite the hashes too
    (cpu_bundle / "manifest.json").write_text(json.dumps(m))
    r = _run(cpu_bundle, "--expect-manifest-sha256", real)
    assert r.returncode == 3 and "sha256 mismatch for manifest.json on the device" in r.stderr


def test_runner_refuses_paths_outside_the_bundle(cpu_bundle):
    m = json.loads((cpu_bundle / "manifest.json").read_text())
    m["files"]["../outside"] = {"sha256": "0" * 64, "bytes": 0}
    (cpu_bundle / "manifest.json").write_text(json.dumps(m))
    r = _run(cpu_bundle)
    assert r.returncode == 3 and "outside the bundle" in r.stderr


def test_runner_exits_1_over_budget_and_still_writes_results(cpu_bundle, tmp_path):
    m = json.loads((cpu_bundle / "manifest.json").read_text())
    m["latency_budget"]["ms"] = 1e-6
    (cpu_bundle / "manifest.json").write_text(json.dumps(m))
    out = tmp_path / "r.json"
    r = _run(cpu_bundle, "--out", str(out), "--no-accuracy")
    assert r.returncode == 1, r.stderr
    assert "latency budget exceeded" in r.stderr
    res = json.loads(out.read_text())
    assert res["budget"]["exceeded"] is True and "accuracy" not in res


def test_runner_rejects_fewer_than_200_runs(cpu_bundle):
    r = _run(cpu_bundle, "--runs", "50")
    assert r.returncode == 2 and "--runs must be >= 200" in r.stderr


FAKE_TRTEXEC = """#!/bin/sh
echo "fake trtexec $*"
for a in "$@"; do
  case "$a" in --saveEngine=*) echo not-an-engine > "${a#--saveEngine=}";; esac
done
"""


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_build_step_with_trtexec_on_a_dla_core(make_run, tmp_path):
    """The TensorRT path up to the engine: build_trtexec.sh's DLA variant runs with the chosen core and
    static shapes, its output lands in the build log; then, with no TensorRT here, one line saying what
    to install."""
    dist = tmp_path / "agx"
    make_bundle(make_run("jetson-agx-orin"), load_target("jetson-agx-orin"), dist)
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(0o755)
    log = tmp_path / "build.log"
    env = {"PATH": "/usr/bin:/bin", "TRTEXEC": str(fake)}
    r = subprocess.run([sys.executable, "-I", str(dist / "device_runner.py"), "--build", "trtexec",
                        "--dla-core", "1", "--build-log", str(log)], capture_output=True, text=True, env=env)
    text = log.read_text()
    assert "fake trtexec --onnx=model_int8.onnx --saveEngine=model_int8.engine" in text
    assert "--useDLACore=1" in text and "--allowGPUFallback" in text and "--maxShapes=input:8x1x8x8" in text
    assert r.returncode == 2 and "TensorRT is not importable" in r.stderr
    assert "sudo apt install python3-libnvinfer" in r.stderr and "--remote-python" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert (dist / "trt_runtime.py").is_file() and not (dist / "trt_runner.py").exists()
    assert not (dist / "results.json").exists()


def test_python_builder_failure_is_reported_with_its_log(make_run, tmp_path):
    dist = tmp_path / "nano"
    make_bundle(make_run("jetson-orin-nano"), load_target("jetson-orin-nano"), dist)
    r = _run(dist, "--build", "python")
    assert r.returncode == 2 and "engine build failed (exit 3)" in r.stderr
    log = (dist / "build.log").read_text()
    assert "trt_builder.py --onnx model_int8.onnx --engine model_int8.engine --min-batch 1" in log
    assert "TensorRT is not importable" in log


def test_images_flag_runs_raw_files_through_the_shipped_preprocess(make_images, tmp_path):
    """`--images DIR`: raw image files -> the bundle's preprocess.py (the training recipe) -> the model."""
    import shutil
    from pathlib import Path

    import numpy as np

    import pipeline.deploy.device.device_runner as dr
    from pipeline.preprocess import Preprocess

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copyfile(Path(dr.__file__).resolve().parents[2] / "preprocess.py", bundle / "preprocess.py")
    root = make_images(tmp_path / "shapes", per_class=2)
    recipe = Preprocess(resize=28, crop=24, mean=(0.5,) * 3, std=(0.5,) * 3).to_dict()
    seen = []

    def infer(x):
        seen.append(x.shape)
        return [np.stack([x.mean(axis=(1, 2, 3)), -x.mean(axis=(1, 2, 3))], axis=1)]

    preds = dr.classify_images(infer, bundle, {"preprocessing": {"recipe": recipe}}, root / "val", 4)
    assert len(preds) == 15 and preds[0]["file"] == "circle/000.png" and seen[0] == (4, 3, 24, 24)
    want = Preprocess.from_dict(recipe).load(root / "val" / "circle" / "000.png")
    assert preds[0]["logit"] == pytest.approx(float(max(want.mean(), -want.mean())), rel=1e-5)
    with pytest.raises(ValueError, match="no preprocessing recipe"):
        dr.classify_images(infer, bundle, {"preprocessing": {"recipe": None}}, root / "val", 4)
