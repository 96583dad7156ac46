"""Phone targets: the build stage's .ort ships in the bundle, and `deploy --device` refuses phones (no SSH there)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pipeline.cli import main
from pipeline.deploy.bundle import make_bundle
from pipeline.fileio import sha256_file
from pipeline.targets import load_target


def _quantize_for(run: Path, target) -> None:
    """Replace the run's INT8 model with one in the target's scheme (the fixture's is TensorRT's float-bias S8S8)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    q = target.quantization
    calib = np.load(run / "data" / "calib.npz")["x"]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    quantize_static(str(run / "export" / "teacher_fp32.onnx"), str(run / "quantize" / "model_int8.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=q.per_channel,
                    activation_type=types[q.activation_type], weight_type=types[q.weight_type],
                    extra_options={"ActivationSymmetric": q.symmetric_activations,
                                   "WeightSymmetric": q.symmetric_weights, "QuantizeBias": q.quantize_bias})
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["final"]["sha256"] = sha256_file(run / "quantize" / "model_int8.onnx")
    (run / "manifest.json").write_text(json.dumps(manifest))


def _with_build_stage(run: Path, target_name: str) -> Path:
    """Run the real build stage on the run's INT8 model and record it in the manifest as run_loop does."""
    from pipeline.stages import build as stage
    from pipeline.stages.base import Artifact, StageInputs

    _quantize_for(run, load_target(target_name))
    with np.load(run / "data" / "eval.npz") as d:
        x, y = d["x"], d["y"]
    data = SimpleNamespace(sample=lambda split, n, seed=0: (x[:n], y[:n]))
    target = load_target(target_name)
    inputs = StageInputs({"quantize": Artifact({"model": run / "quantize" / "model_int8.onnx"}, "model")}, None,
                         target, data, run, run, print)
    art = stage.run(inputs, None, run / "build")
    assert art.status == "done" and art.primary == "ort_model" and art.path.name == "model.ort"
    assert art.metrics.parity["top1_agreement"] >= 0.995 and art.metrics.parity["samples"] == len(x)
    assert "ORT format model.ort" in art.metrics.note and "NNAPI" in art.metrics.note
    assert "not in this onnxruntime build: checked without them" in art.metrics.note  # x86 wheel: CPU EP only
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["stages"] = [{"name": "build", "status": "done",
                           "files": {r: str(p.relative_to(run)) for r, p in art.files.items()},
                           "metrics": art.metrics.to_dict()}]
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_phone_bundle_ships_the_ort_and_its_operator_config(make_run, tmp_path):
    run = _with_build_stage(make_run("android-arm64"), "android-arm64")
    dist = tmp_path / "dist" / "android"
    manifest = make_bundle(run, load_target("android-arm64"), dist)
    assert {"model.ort", "required_operators_and_types.config", "mobile_usability.txt"} <= set(manifest["files"])
    assert (dist / "model.ort").read_bytes() == (run / "build" / "model.ort").read_bytes()
    ort_mobile = manifest["ort_mobile"]
    assert ort_mobile["model"] == "model.ort" and ort_mobile["fixed_batch"] == 1
    assert ort_mobile["session"]["execution_providers"][0] == "NnapiExecutionProvider"
    assert ort_mobile["parity"]["top1_agreement"] >= 0.995 and "NNAPI" in ort_mobile["mobile_usability"]["eps"]


def test_phone_bundle_without_device_says_how_to_ship_it(make_run, tmp_path, capsys):
    run = _with_build_stage(make_run("android-arm64"), "android-arm64")
    dist = tmp_path / "android"
    assert main(["deploy", "--run", str(run), "--target", "android-arm64", "--dist", str(dist)]) == 0
    err = capsys.readouterr().err
    assert f"add {dist / 'model.ort'} to your app" in err and "scp" not in err


def test_phone_bundle_needs_the_build_stages_ort(make_run, tmp_path, capsys):
    rc = main(["deploy", "--run", str(make_run("ios-arm64")), "--target", "ios-arm64",
               "--dist", str(tmp_path / "d")])
    assert rc == 2 and "has no .ort model for target ios-arm64" in capsys.readouterr().err


def test_deploy_device_refuses_a_phone_before_any_work(make_run, tmp_path, capsys):
    run = str(make_run("android-arm64"))
    dist = tmp_path / "d"
    rc = main(["deploy", "--run", run, "--target", "android-arm64", "--dist", str(dist), "--device", "u@phone"])
    err = capsys.readouterr().err
    assert rc == 2 and "is a phone (device_kind: phone)" in err and "cannot reach over SSH" in err
    assert "model.ort" in err and not dist.exists(), "nothing is bundled when the device cannot be reached"


def test_deploy_bundle_to_a_phone_is_refused(make_run, tmp_path, capsys):
    run = _with_build_stage(make_run("ios-arm64"), "ios-arm64")
    dist = tmp_path / "ios"
    make_bundle(run, load_target("ios-arm64"), dist)
    capsys.readouterr()
    assert main(["deploy", "--bundle", str(dist), "--device", "u@phone"]) == 2
    assert "target ios-arm64 is a phone" in capsys.readouterr().err


def test_config_to_android_bundle_through_the_pipeline(digits_tiny, tmp_path, capsys):
    """The real pipeline for a phone target: the build stage writes the verified .ort, the bundle ships it."""
    out, dist = tmp_path / "run", tmp_path / "dist" / "android"
    rc = main(["deploy", "--config", str(digits_tiny), "--target", "android-arm64", "--out", str(out),
               "--dist", str(dist)])
    err = capsys.readouterr().err
    assert rc == 0, err
    run = json.loads((out / "manifest.json").read_text())
    build = next(r for r in run["stages"] if r["name"] == "build")
    assert build["status"] == "done" and build["files"]["ort_model"] == "build/model.ort"
    assert build["metrics"]["parity"]["top1_agreement"] >= 0.995
    bundle = json.loads((dist / "manifest.json").read_text())
    assert bundle["ort_mobile"]["model"] == "model.ort" and "model.ort" in bundle["files"]
    assert "## Build for the target" in (out / "report.md").read_text()
