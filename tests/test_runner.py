"""The run loop end to end on tiny models: every stage, the manifest, the cache, failures."""

from __future__ import annotations

import json
import time

import numpy as np
import onnx
import pytest

from pipeline.cli import main
from pipeline.run_loop import run_pipeline
from pipeline.stages import STAGE_NAMES

# Not marked slow: end-to-end runs of 6-35 s each (2 busy cores); `slow` is for tests over ~60 s.


def test_external_models_and_npz_run_every_stage(external_project, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--config", str(external_project), "--out", str(out), "--quiet", "--json", "-"])
    assert code == 0
    m = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in m["stages"]] == list(STAGE_NAMES)
    assert all(s["status"] in ("done", "skipped") for s in m["stages"])
    by = {s["name"]: s for s in m["stages"]}
    # pruning really removed channels through the SE + depthwise residual blocks
    assert by["prune"]["metrics"]["params"] < by["prune"]["metrics"]["params_before"]
    assert by["distill"]["metrics"]["images"] == 192
    f = m["final"]
    assert f["input"]["shape"] == [1, 2, 8, 8] and f["input"]["layout"] == "NCHW"
    assert set(f["latency_ms"]) == {"p50", "p90", "p99"} and f["latency_ms"]["p50"] > 0
    # the final file is a real INT8 QDQ graph, unless the INT8 search measured FP32 faster on this CPU for this
    # tiny 8x8 model and shipped it with the reason; the teacher's FP32 ONNX is kept for reruns
    ops = {n.op_type for n in onnx.load(str(out / f["path"])).graph.node}
    q = by["quantize"]["metrics"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops if q.get("decision", "int8") == "int8" else (
        "QuantizeLinear" not in ops and q["reason"])
    assert (out / f["teacher_onnx"]).is_file() and (out / "report.md").is_file() and (out / "report.png").is_file()
    assert json.loads((out / "manifest.json").read_text())["final"]["sha256"] == f["sha256"]
    # every training call recorded how it ran, and left no resume state behind once its stage succeeded
    for stage in ("train_teacher", "distill", "prune"):
        t = by[stage]["metrics"]["training"]
        assert t["device"] == "cpu" and t["precision"] == "fp32" and t["epochs"] >= 1 and t["images_per_s"] > 0
    assert not list((out / ".resume").rglob("*.pt"))


def test_rerun_is_cached_and_force_redoes(digits_tiny, tmp_path):
    out = tmp_path / "run"
    t0 = time.perf_counter()
    first = run_pipeline(digits_tiny, out_dir=out, quiet=True)
    first_s = time.perf_counter() - t0
    second = run_pipeline(digits_tiny, out_dir=out, quiet=True)
    assert [s["status"] for s in second["stages"]] == ["cached"] * len(STAGE_NAMES)
    assert second["final"]["sha256"] == first["final"]["sha256"]
    assert second["pipeline_seconds"] < first_s  # structural: nothing was recomputed
    # changing one stage's config redoes that stage and those after it, not those before
    cfg = digits_tiny.read_text().replace("calibration_samples: 32", "calibration_samples: 48")
    digits_tiny.write_text(cfg)
    third = run_pipeline(digits_tiny, out_dir=out, quiet=True)
    status = {s["name"]: s["status"] for s in third["stages"]}
    assert status["distill"] == "cached" and status["export"] == "cached"
    assert status["quantize"] == "done"
    # the benchmark reruns when the quantized file changed; the search may pick the same file again (e.g. FP32,
    # when INT8 is measured slower on this machine), and then its input, and so its result, is unchanged
    changed = third["final"]["sha256"] != second["final"]["sha256"]
    assert status["benchmark"] == ("done" if changed else "cached"), (changed, status)
    forced = run_pipeline(digits_tiny, out_dir=out, quiet=True, force=True)
    assert "cached" not in {s["status"] for s in forced["stages"]}


def test_failed_stage_keeps_earlier_results_and_its_previous_artifact(digits_tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_pipeline(digits_tiny, out_dir=out, quiet=True)
    before = (out / "quantize" / "model_int8.onnx").read_bytes()
    digits_tiny.write_text(digits_tiny.read_text().replace("calibration_samples: 32", "calibration_samples: 40"))

    import pipeline.stages.quantize as q

    def broken(inputs, cfg, workdir):
        (workdir / "model_int8.onnx").write_bytes(b"half-written")
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-stage

    monkeypatch.setattr(q, "run", broken)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(digits_tiny, out_dir=out, quiet=True)
    assert (out / "quantize" / "model_int8.onnx").read_bytes() == before
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] is False and m["failed_stage"] == "quantize"
    monkeypatch.undo()
    again = run_pipeline(digits_tiny, out_dir=out, quiet=True)
    status = {s["name"]: s["status"] for s in again["stages"]}
    assert status["export"] == "cached" and status["quantize"] == "done"


def test_accuracy_budget_failure_is_exit_1_and_names_the_budget(digits_tiny, tmp_path, capsys):
    text = digits_tiny.read_text().replace("max_accuracy_drop: 60, min_top1_agreement: 0.0",
                                           "max_accuracy_drop: 0, min_top1_agreement: 1.0, fallback: false")
    digits_tiny.write_text(text)
    code = main(["run", "--config", str(digits_tiny), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "quantize.max_accuracy_drop" in err
    assert not (tmp_path / "run" / "quantize" / "model_int8.onnx").exists()


def test_data_that_does_not_fit_the_model_is_a_user_error(external_project, tmp_path, capsys):
    # the teacher is pinned to 2 input channels; the data has 3
    external_project.write_text(external_project.read_text().replace(
        'teacher: {factory: "models:make_teacher"}',
        'teacher: {factory: "models:make_teacher", kwargs: {in_channels: 2}}'))
    rng = np.random.default_rng(0)  # real-looking images (blank ones are refused earlier, by the data checks)
    for name in ("train", "val", "test"):
        np.savez(external_project.parent / f"{name}.npz", x=rng.normal(0, 1, (9, 3, 8, 8)).astype(np.float32),
                 y=np.arange(9, dtype=np.int64) % 3)
    code = main(["run", "--config", str(external_project), "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "do not fit the teacher model" in err and "[3, 8, 8]" in err
    assert "Traceback" not in err


def test_npz_with_wrong_arrays_names_the_path(external_project, tmp_path, capsys):
    np.savez(external_project.parent / "val.npz", images=np.zeros((4, 2, 8, 8), np.float32))
    code = main(["run", "--config", str(external_project), "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "data.val" in err and "val.npz" in err and "no array 'x' (found images)" in err



def test_sibling_run_folders_share_target_independent_stages(digits_tiny, tmp_path):
    run_pipeline(digits_tiny, target="cpu", out_dir=tmp_path / "runs" / "cpu", quiet=True)
    # jetson-orin-nano has the cpu target's channel multiple (16), so pruning is shared too
    other = run_pipeline(digits_tiny, target="jetson-orin-nano", out_dir=tmp_path / "runs" / "arm", quiet=True)
    status = {s["name"]: s["status"] for s in other["stages"]}
    assert [status[n] for n in ("train_teacher", "distill", "prune", "export")] == ["cached"] * 4
    assert status["quantize"] == "done"  # the target's INT8 scheme differs
    assert (tmp_path / "runs" / "arm" / "export" / "teacher_fp32.onnx").is_file()
    # arm64-cpu rounds channels to 8: its pruning is its own
    arm = run_pipeline(digits_tiny, target="arm64-cpu", out_dir=tmp_path / "runs" / "arm64", quiet=True)
    assert {s["name"]: s["status"] for s in arm["stages"]}["prune"] == "done"
    # a corrupted store entry is never trusted: it is redone
    store = tmp_path / "runs" / ".edgepipe-cache"
    for f in store.glob("*/student.pt"):
        f.write_bytes(b"corrupt")
    third = run_pipeline(digits_tiny, target="cpu", out_dir=tmp_path / "runs" / "cpu2", quiet=True)
    assert {s["name"]: s["status"] for s in third["stages"]}["distill"] == "done"
    fourth = run_pipeline(digits_tiny, target="cpu", out_dir=tmp_path / "runs" / "cpu3", quiet=True)
    assert {s["name"]: s["status"] for s in fourth["stages"]}["distill"] == "cached"  # the store was repaired


def test_model_returning_a_tuple_is_a_clear_user_error(external_project, tmp_path, capsys):
    models = external_project.parent / "models.py"
    models.write_text(models.read_text() + (
        "\n\nclass TwoHeads(Teacher):\n"
        "    def forward(self, x):\n"
        "        y = super().forward(x)\n"
        "        return y, y\n"
        "\n\ndef make_two(num_classes, in_channels):\n"
        "    return TwoHeads(num_classes, in_channels)\n"
    ))
    external_project.write_text(external_project.read_text().replace("models:make_teacher", "models:make_two"))
    code = main(["run", "--config", str(external_project), "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "teacher: the model returns tuple" in err and "Traceback" not in err


def test_changing_the_student_keeps_the_trained_teacher(digits_tiny, tmp_path):
    out = tmp_path / "run"
    run_pipeline(digits_tiny, out_dir=out, quiet=True)
    digits_tiny.write_text(digits_tiny.read_text().replace("mobilenetv2_student, width: 0.5",
                                                           "mobilenetv2_student, width: 0.75"))
    again = run_pipeline(digits_tiny, out_dir=out, quiet=True)
    status = {s["name"]: s["status"] for s in again["stages"]}
    assert status["train_teacher"] == "cached" and status["distill"] == "done"


def test_out_naming_a_file_is_exit_2_with_one_line(digits_tiny, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file, not a run folder")
    for out in (tmp_path / "taken", tmp_path / "taken" / "run"):
        code = main(["run", "--config", str(digits_tiny), "--out", str(out), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and str(out) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "taken").read_text() == "a file, not a run folder"
    code = main(["deploy", "--config", str(digits_tiny), "--target", "cpu", "--out", str(tmp_path / "r"),
                 "--dist", str(tmp_path / "taken")])
    err = capsys.readouterr().err
    assert code == 2 and "--dist" in err and "is a file" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists(), "the pipeline does not run when --dist cannot be written"
