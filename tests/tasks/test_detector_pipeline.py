"""Acceptance, end to end: the trained detector as `model:` with `eval:` mAP@0.5, through `edgepipe run` with no
distillation (export -> INT8 -> benchmark -> report) and into a bundle that carries both outputs."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_detector_model_and_eval_through_the_run_loop_and_the_bundle(trained_detector, tmp_path):
    from pipeline.deploy.bundle import make_bundle
    from pipeline.run_loop import run_pipeline
    from pipeline.targets import load_target

    _, weights = trained_detector
    shutil.copyfile(HERE / "detector_fixture.py", tmp_path / "detector_fixture.py")
    shutil.copyfile(weights, tmp_path / "detector.pt")
    cfg = tmp_path / "detector.yaml"
    cfg.write_text(textwrap.dedent("""
        name: shapes-detector
        model: {factory: "detector_fixture:make_detector", weights: detector.pt}
        data: {factory: "detector_fixture:shapes_data"}
        eval: "detector_fixture:map50"
        distill: {enabled: false}
        prune: {enabled: false}
        quantize: {max_accuracy_drop: 2.0, calibration_samples: 128}
        benchmark: {warmup: 5, iterations: 200, batches: [1]}
    """))
    manifest = run_pipeline(cfg, "cpu", tmp_path / "run", quiet=True)
    final = manifest["final"]
    stages = {s["name"]: s for s in manifest["stages"]}
    assert stages["distill"]["status"] == "skipped"
    export_parity = stages["export"]["metrics"]["student"]["parity_vs_torch"]
    assert export_parity["output_names"] == ["boxes", "scores"]
    fp32 = stages["export"]["metrics"]["accuracy"]
    assert fp32 > 0.85 and final["accuracy"] >= fp32 - 0.02  # mAP@0.5 within 2 points of FP32
    # every stage scores with the user's mAP, not an argmax over the detector's tuple
    assert stages["train_teacher"]["metrics"]["accuracy"] == pytest.approx(fp32, abs=1e-3)
    q = stages["quantize"]["metrics"]
    report = (tmp_path / "run" / final["report"]).read_text()
    print(f"mAP@0.5 FP32 {fp32:.4f}, shipped {q['decision']} {final['accuracy']:.4f}, head exclusions effect "
          f"{q.get('head_exclusions_effect')}")
    assert q["scored_by"] == "detector_fixture:map50" and final["accuracy"] == q["accuracy"]
    heads = {h["name"] for h in q["head_exclusions"]}
    assert heads and not [n for n in heads if "backbone" in n]
    if q["decision"] == "int8":  # shipped INT8: the head decode stayed float in it
        assert heads <= set(q["excluded_nodes"])
        eff = q["head_exclusions_effect"]
        assert eff["score_with"] >= fp32 - 0.02 and "Without the head exclusions" in report
    assert final["precision"] == "int8" and [o["name"] for o in final["outputs"]] == ["boxes", "scores"]
    assert final["input"]["name"] == "input" and final["output"]["name"] == "boxes"
    assert "detector_fixture:map50" in report and "Head decode kept in float" in report
    bundle = make_bundle(tmp_path / "run", load_target("cpu"), tmp_path / "dist")
    assert [o["name"] for o in bundle["outputs"]] == ["boxes", "scores"]
    assert bundle["input"].get("spatial_range", {}).get("opt") == [48, 48]
