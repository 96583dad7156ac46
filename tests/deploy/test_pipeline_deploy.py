"""`edgepipe deploy --config` through the real pipeline (tiny config), then over SSH, and for a Jetson target."""

from __future__ import annotations

import json
import sys

import pytest

from pipeline.build import recipe
from pipeline.cli import main

# Not marked slow: end-to-end runs of 6-35 s each (2 busy cores); `slow` is for tests over ~60 s.


@pytest.mark.ssh
def test_config_to_device_over_ssh(digits_tiny, sshd, roomy_targets, tmp_path, capsys):
    out, dist = tmp_path / "run", tmp_path / "dist"
    rc = main(["deploy", "--config", str(digits_tiny), "--target", "arm64-cpu", "--out", str(out),
               "--dist", str(dist), "--device", f"{sshd['user']}@127.0.0.1", "--port", str(sshd["port"]),
               "--identity", str(sshd["identity"]), "--known-hosts", str(sshd["known_hosts"]),
               "--remote-dir", str(sshd["dir"] / "remote"), "--remote-python", sys.executable])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads(stdout)
    run = json.loads((out / "manifest.json").read_text())
    bundle = json.loads((dist / "manifest.json").read_text())
    assert bundle["source_run"]["model_sha256"] == run["final"]["sha256"]
    assert bundle["expected"]["accuracy"] == run["final"]["accuracy"]
    results = json.loads((dist / "results" / "results.json").read_text())
    # same model, same eval data, same runtime: the device's accuracy is the pipeline's
    assert results["accuracy"]["accuracy"] == pytest.approx(run["final"]["accuracy"], abs=1e-6)
    assert summary["device"]["verified"] is True


def test_config_to_jetson_bundle_without_device(digits_tiny, tmp_path, capsys):
    out, dist = tmp_path / "run", tmp_path / "dist" / "jetson"
    rc = main(["deploy", "--config", str(digits_tiny), "--target", "jetson", "--out", str(out), "--dist", str(dist)])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert "To finish on the device" in err and "python3 device_runner.py" in err
    m = json.loads((dist / "manifest.json").read_text())
    assert m["target"]["name"] == "jetson-orin-nano" and m["runtime"] == "tensorrt"
    recipe.check_qdq_for_tensorrt(dist / "model_int8.onnx")  # S8S8, symmetric, float biases
    assert {"trt_builder.py", "trt_runtime.py", "build_trtexec.sh", "device_runner.py"} <= set(m["files"])
    assert m["target_alias"] == "jetson"
    run = json.loads((out / "manifest.json").read_text())
    assert run["target"] == "jetson-orin-nano" and run["target_alias"] == "jetson"
    # the build stage recorded the same device commands the bundle ships
    build = next(s for s in run["stages"] if s["name"] == "build")["metrics"]
    assert build["trtexec"] == m["build"]["trtexec_argv"]
    assert build["device_build_command"][2:] == m["build"]["python_args"]
    assert not any("DLA" in a for a in m["build"]["trtexec_argv"])
