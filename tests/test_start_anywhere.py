"""Start anywhere: a `model:` instead of teacher/student, stages that really skip, and FP32 shipping."""

from __future__ import annotations

import json

import onnx
import pytest

from pipeline.cli import main
from pipeline.run_loop import run_pipeline
from pipeline.stages import STAGE_NAMES

QUIET_BENCH = "benchmark: {warmup: 2, iterations: 200, batches: [1]}\n"


@pytest.fixture()
def project(external_project):
    """Write a config beside the external project's data and models.py, with the student's weights saved."""
    return lambda model_yaml, stages: _project(external_project.parent, model_yaml, stages)


def _project(tmp_path, model_yaml: str, stages: str) -> tuple:
    """The external project's data and models.py, a model's weights (weights.pt), and a config."""
    import sys

    import torch

    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        models = importlib.import_module("models")
        importlib.reload(models)  # another test's tmp folder may have imported a `models` before
        torch.manual_seed(0)
        model = models.make_student(3, 2)
    finally:
        sys.path.remove(str(tmp_path))
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    cfg = tmp_path / "model.yaml"
    cfg.write_text("name: given\n" + model_yaml + "data: {train: train.npz, val: val.npz, test: test.npz}\n" + stages)
    return cfg, model


def _by_name(manifest: dict) -> dict:
    return {s["name"]: s for s in manifest["stages"]}


def test_model_with_distill_and_prune_off_starts_at_export(project, tmp_path):
    cfg, _ = project('model: {factory: "models:make_student", weights: weights.pt}\n',
                      "prune: {enabled: false}\nquantize: {calibration_samples: 32, max_accuracy_drop: 60, "
                      "min_top1_agreement: 0.0}\n" + QUIET_BENCH)
    m = run_pipeline(cfg, out_dir=tmp_path / "run", quiet=True)
    by = _by_name(m)
    assert [s["name"] for s in m["stages"]] == list(STAGE_NAMES)
    # skipped stages are recorded with the reason, and did nothing (no folder, no artifact)
    assert by["distill"]["status"] == "skipped" and "no student to distil" in by["distill"]["reason"]
    assert by["prune"]["status"] == "skipped" and "prune.enabled: false" in by["prune"]["reason"]
    assert by["prune"]["artifact"] is None and not (tmp_path / "run" / "distill").exists()
    assert not (tmp_path / "run" / "prune").exists()
    # the model given is loaded once (its FP32 reference), then exported: export read it in place of prune
    assert by["train_teacher"]["metrics"]["source"] == "model: weights weights.pt"
    assert "training" not in by["train_teacher"]["metrics"]
    assert by["export"]["status"] == "done" and by["export"]["inputs_from"] == {"prune": "train_teacher"}
    assert by["quantize"]["status"] == "done" and by["benchmark"]["status"] == "done"
    f = m["final"]
    # the INT8 search may ship FP32 for this tiny model when INT8 is not faster here; precision says which
    assert f["precision"] == by["quantize"]["metrics"].get("decision", "int8") and f["sha256"]
    assert f["path"] == "quantize/model_int8.onnx"
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Skipped stages" in report and "distill" in report and "KD fine-tune" not in report
    # a rerun is cached stage by stage, skipped stages stay skipped
    again = run_pipeline(cfg, out_dir=tmp_path / "run", quiet=True)
    assert {s["name"]: s["status"] for s in again["stages"]} == {
        n: ("skipped" if n in ("distill", "prune") else "cached") for n in STAGE_NAMES}


def test_quantize_disabled_ships_the_fp32_onnx(project, tmp_path):
    cfg, _ = project('model: {factory: "models:make_student", weights: weights.pt}\n',
                      "prune: {enabled: false}\nquantize: {enabled: false}\n" + QUIET_BENCH)
    out = tmp_path / "run"
    code = main(["run", "--config", str(cfg), "--out", str(out), "--quiet"])
    assert code == 0
    m = json.loads((out / "manifest.json").read_text())
    by = _by_name(m)
    assert by["quantize"]["status"] == "skipped" and "FP32 ONNX" in by["quantize"]["reason"]
    f = m["final"]
    assert f["precision"] == "fp32" and f["path"] == "export/student_fp32.onnx" and (out / f["path"]).is_file()
    assert "QuantizeLinear" not in {n.op_type for n in onnx.load(out / f["path"]).graph.node}
    assert by["build"]["inputs_from"] == {"quantize": "export"}
    # the final model is the FP32 one: timed once, its numbers under both labels
    lat = by["benchmark"]["metrics"]["latency"]
    assert lat["final_int8"]["1"] == lat["student_fp32"]["1"] and f["latency_ms"]["p50"] > 0
    assert "quantize skipped" in (out / "report.md").read_text()


def test_onnx_model_starts_at_quantize(project, tmp_path):
    import torch

    cfg, model = project("model: {onnx: given.onnx}\n",
                          "quantize: {calibration_samples: 32, max_accuracy_drop: 60, min_top1_agreement: 0.0}\n"
                          + QUIET_BENCH)
    torch.onnx.export(model.eval(), torch.zeros(1, 2, 8, 8), str(tmp_path / "given.onnx"), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      dynamo=False)
    m = run_pipeline(cfg, out_dir=tmp_path / "run", quiet=True)
    by = _by_name(m)
    for name in ("train_teacher", "distill", "prune", "export"):
        assert by[name]["status"] == "skipped" and "given.onnx" in by[name]["reason"]
    assert by["quantize"]["status"] == "done" and by["quantize"]["inputs_from"] == {"export": "source:onnx"}
    assert m["final"]["precision"] == by["quantize"]["metrics"].get("decision", "int8")
    assert m["final"]["teacher_onnx"] is None
    assert "teacher_fp32" not in by["benchmark"]["metrics"]["latency"]
    assert (tmp_path / "run" / "source" / "model_fp32.onnx").is_file()


def test_prune_fine_tunes_with_the_given_model_as_teacher(project, tmp_path):
    cfg, _ = project('model: {factory: "models:make_student", weights: weights.pt}\n',
                      "prune: {ratio: 0.3, finetune_epochs: 1, max_accuracy_drop: 60}\n"
                      "quantize: {enabled: false}\n" + QUIET_BENCH)
    m = run_pipeline(cfg, out_dir=tmp_path / "run", quiet=True)
    by = _by_name(m)
    assert by["prune"]["status"] == "done" and by["prune"]["inputs_from"] == {"distill": "train_teacher"}
    assert by["prune"]["metrics"]["params"] < by["prune"]["metrics"]["params_before"]
    assert by["prune"]["metrics"]["training"]["epochs"] == 1


@pytest.mark.parametrize("models, message", [
    ('model: {factory: "models:make_student", weights: weights.pt}\nteacher: {factory: "models:make_teacher"}\n',
     "model: and teacher: are both given"),
    ('teacher: {factory: "models:make_teacher"}\n', "missing required key 'student'"),
    ('model: {factory: "models:make_student"}\n', "model.weights is required"),
    ('model: {factory: "models:make_student", weights: weights.pt}\ndistill: {enabled: true}\n',
     "distill.enabled = true needs teacher: and student:"),
    ("model: {onnx: missing.onnx}\n", "missing.onnx"),
    ("model: {onnx: weights.pt}\nprune: {enabled: true}\n", "prune.enabled = true needs a PyTorch model"),
    ('teacher: {factory: "models:make_teacher"}\nstudent: {factory: "models:make_student"}\n'
     "distill: {enabled: false}\n", "distill.enabled = false needs student.weights"),
    ("model: {onnx: weights.pt}\n", "not a valid ONNX model"),
])
def test_config_errors_name_what_is_needed(project, tmp_path, capsys, models, message):
    cfg, _ = project(models, "")
    code = main(["run", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
