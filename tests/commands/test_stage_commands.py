"""`edgepipe export|quantize|build` on files: the pipeline's stages, their records and exit codes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from pipeline.cli import main


def _plain_onnx(path, tied: bool = False):
    """An ONNX file edgepipe did not produce: plain `torch.onnx.export` of a small conv net.

    `tied`: 50 classes whose logits differ by ~1e-4 through a 1x1 conv that stays quantized even when the
    stage's fallback keeps the first conv and the classifier in float, so INT8 cannot keep every top-1.
    """
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    classes = 50 if tied else 3
    m = nn.Sequential(nn.Conv2d(2, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, classes, 1), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(classes, classes)).eval()
    if tied:
        with torch.no_grad():
            m[2].weight.copy_(torch.randn(1, 16, 1, 1) + 1e-4 * torch.randn(classes, 16, 1, 1))
            m[2].bias.zero_()
            m[-1].weight.copy_(torch.eye(classes))
            m[-1].bias.zero_()
    # the input is named "x", not edgepipe's "input": every reader must take the model's own name
    torch.onnx.export(m, torch.zeros(1, 2, 8, 8), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    return path


@pytest.fixture()
def calib(tmp_path):
    """64 unlabeled calibration images (x only), 2x8x8."""
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.random.default_rng(0).normal(0, 1, (64, 2, 8, 8)).astype(np.float32))
    return path


def test_quantize_a_plain_onnx_writes_int8_and_manifest(tmp_path, calib, capsys):
    model = _plain_onnx(tmp_path / "some.onnx")
    out = tmp_path / "d"
    code = main(["quantize", str(model), "--calib", str(calib), "--target", "cpu", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    onnx.checker.check_model(str(out / "model_int8.onnx"))  # which nodes stay float is the INT8 search's call
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and m["command"] == "quantize" and m["target"] == "cpu"
    # no labels: the held-out part is labelled by the FP32 model, so accuracy is agreement with it
    c = m["calibration"]
    assert c["labels"] == "fp32 top-1" and c["held_out_images"] == 16 and c["calibration_images"] == 48
    rec = m["stages"][0]
    assert rec["name"] == "quantize" and rec["status"] == "done" and rec["artifact"]["path"] == "model_int8.onnx"
    assert rec["metrics"]["accuracy_fp32"] == 1.0 and "scheme" in rec["metrics"]
    assert m["final"]["sha256"] == rec["artifact"]["sha256"] and not (out / ".work").exists()
    # the INT8 model keeps the plain export's input name, and runs fed under it
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "model_int8.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x"]
    assert sess.run(None, {"x": np.zeros((2, 2, 8, 8), np.float32)})[0].shape == (2, 3)


def test_quantize_with_labels_uses_accuracy(tmp_path, capsys):
    model = _plain_onnx(tmp_path / "some.onnx")
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "lab.npz", x=rng.normal(0, 1, (40, 2, 8, 8)).astype(np.float32),
             y=rng.integers(0, 3, 40).astype(np.int64))
    code = main(["quantize", str(model), "--calib", str(tmp_path / "lab.npz"), "--out", str(tmp_path / "d"),
                 "--max-accuracy-drop", "100", "--quiet", "--json", "-"])
    m = json.loads(capsys.readouterr().out)
    assert code == 0 and m["calibration"]["labels"] == "given"


def test_quantize_budget_it_cannot_meet_exits_1(tmp_path, calib, capsys):
    model = _plain_onnx(tmp_path / "tied.onnx", tied=True)
    out = tmp_path / "d"
    code = main(["quantize", str(model), "--calib", str(calib), "--target", "cpu", "--out", str(out),
                 "--min-agreement", "1.0", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "budget exceeded" in err and "Traceback" not in err
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] is False and m["failed_stage"] == "quantize"
    assert not (out / "model_int8.onnx").exists()


@pytest.mark.parametrize("case", ["missing-model", "not-onnx", "missing-calib", "calib-no-x", "bad-holdout",
                                  "wrong-shape"])
def test_quantize_bad_inputs_exit_2_naming_the_path(tmp_path, calib, capsys, case):
    model = _plain_onnx(tmp_path / "some.onnx")
    args = {"model": str(model), "calib": str(calib), "extra": []}
    named = None
    if case == "missing-model":
        args["model"] = named = str(tmp_path / "absent.onnx")
    elif case == "not-onnx":
        (tmp_path / "junk.onnx").write_bytes(b"not a model")
        args["model"] = named = str(tmp_path / "junk.onnx")
    elif case == "missing-calib":
        args["calib"] = named = str(tmp_path / "nothing.npz")
    elif case == "calib-no-x":
        np.savez(tmp_path / "bad.npz", images=np.zeros((4, 2, 8, 8), np.float32))
        args["calib"] = named = str(tmp_path / "bad.npz")
    elif case == "bad-holdout":
        args["extra"], named = ["--holdout", "1.5"], "--holdout"
    else:
        np.savez(tmp_path / "rgb.npz", x=np.random.default_rng(0).normal(0, 1, (8, 3, 8, 8)).astype(np.float32))
        args["calib"] = named = str(tmp_path / "rgb.npz")
    code = main(["quantize", args["model"], "--calib", args["calib"], "--out", str(tmp_path / "d"), "--quiet",
                 *args["extra"]])
    err = capsys.readouterr().err
    assert code == 2 and named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_build_for_an_onnx_runtime_target_records_why_nothing_was_built(tmp_path, capsys):
    model = _plain_onnx(tmp_path / "some.onnx")
    out = tmp_path / "b"
    code = main(["build", str(model), "--target", "cpu", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "manifest.json").read_text())
    rec = m["stages"][0]
    assert rec["name"] == "build" and rec["status"] == "skipped" and rec["metrics"]["reason"]
    assert (out / "build_report.json").is_file() and m["final"]["path"] == "build_report.json"
    assert main(["build", str(tmp_path / "none.onnx"), "--out", str(out), "--quiet"]) == 2
    assert "none.onnx" in capsys.readouterr().err


def test_export_one_model_then_quantize_it(external_models, tmp_path, monkeypatch, calib, capsys):
    import torch

    monkeypatch.chdir(tmp_path)  # the factory's module sits in the folder the command runs in
    (tmp_path / "netmod.py").write_text("from ext_models import Student\n\n\ndef make(num_classes, in_channels):\n"
                                        "    return Student(num_classes, in_channels)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    torch.save(external_models.Student(3, 2).state_dict(), tmp_path / "w.pt")
    out = tmp_path / "e"
    code = main(["export", "--model", "netmod:make", "--weights", "w.pt", "--input-shape", "1,2,8,8",
                 "--num-classes", "3", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "manifest.json").read_text())
    rec = m["stages"][0]
    assert rec["name"] == "export" and rec["status"] == "done" and m["final"]["path"] == "student_fp32.onnx"
    # compared with PyTorch on random inputs labelled by PyTorch: the "accuracy" is agreement, and it is 100 %
    assert rec["metrics"]["student"]["parity_vs_torch"]["top1_agreement"] == 1.0 and "agreement" in m["data"]
    code = main(["quantize", str(out / "student_fp32.onnx"), "--calib", str(calib), "--out", str(tmp_path / "q"),
                 "--max-accuracy-drop", "100", "--quiet"])
    assert code == 0 and (tmp_path / "q" / "model_int8.onnx").is_file()
    # a shape the model cannot take, or a missing --weights, is a user error naming it
    assert main(["export", "--model", "netmod:make", "--weights", "w.pt", "--input-shape", "1,2,8",
                 "--num-classes", "3", "--out", str(out), "--quiet"]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main(["export", "--model", "netmod:make", "--input-shape", "1,2,8,8", "--out", str(out)]) == 2
    assert "--weights" in capsys.readouterr().err


def test_export_from_a_config_stops_after_export(external_project, tmp_path):
    text = external_project.read_text() + "distill: {enabled: false}\n"
    # a trained student's weights (any will do here): distillation is skipped, so it goes on as it is
    import torch

    text = text.replace("distill: {epochs: 3, batch_size: 32}\n", "").replace(
        'student: {factory: "models:make_student"}', 'student: {factory: "models:make_student", weights: s.pt}')
    import importlib.util

    spec = importlib.util.spec_from_file_location("ext_student", external_project.parent / "models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.save(mod.make_student(3, 2).state_dict(), external_project.parent / "s.pt")
    external_project.write_text(text)
    out = tmp_path / "run"
    assert main(["export", "--config", str(external_project), "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert [s["name"] for s in m["stages"]] == ["train_teacher", "distill", "prune", "export"]
    by = {s["name"]: s for s in m["stages"]}
    assert by["distill"]["status"] == "skipped" and by["prune"]["inputs_from"] == {"distill": "source:student"}
    assert m["stopped_after"] == "export" and m["final"] is None and (out / "export" / "student_fp32.onnx").is_file()
