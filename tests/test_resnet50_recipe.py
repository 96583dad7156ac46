"""The seed's recipe (`pipeline/configs/resnet50_mobilenetv2.yaml`) runs end to end: structure, not accuracy.

The config is run as shipped except for what makes it tiny: its image folders point at a generated
3-class folder, images are 32 px, every training call is 1 epoch, and no worker processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipeline.cli import main

RECIPE = Path(__file__).resolve().parents[1] / "pipeline" / "configs" / "resnet50_mobilenetv2.yaml"


def test_resnet50_to_mobilenet_v2_recipe_runs_on_a_tiny_folder(make_images, tmp_path, capsys):
    root = make_images(tmp_path / "images", per_class=8)
    cfg = yaml.safe_load(RECIPE.read_text())
    assert cfg["teacher"] == {"builtin": "resnet50"} and cfg["student"]["builtin"] == "mobilenet_v2"
    assert cfg["preprocess"] == "imagenet" and cfg["augment"] == "standard" and cfg["device"] == "auto"
    cfg["data"] = {"train": str(root / "train"), "val": str(root / "val")}
    cfg["preprocess"] = {"resize": 36, "crop": 32}  # ImageNet mean/std, tiny images
    cfg["workers"] = 0
    cfg["train_teacher"].update(epochs=1, batch_size=8)
    cfg["distill"].update(epochs=1, batch_size=8)
    cfg["prune"].update(finetune_epochs=1, max_accuracy_drop=100)
    cfg["quantize"].update(max_accuracy_drop=100, min_top1_agreement=0.0, calibration_samples=16)
    cfg["benchmark"] = {"warmup": 1, "iterations": 200, "batches": [1]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "run"), "--quiet", "--json", "-"]) == 0
    m = json.loads(capsys.readouterr().out)
    by = {s["name"]: s for s in m["stages"]}
    assert by["train_teacher"]["metrics"]["params"] > 20_000_000  # a real ResNet-50 (3 classes)
    assert by["distill"]["metrics"]["params"] < 3_000_000  # MobileNetV2
    assert by["distill"]["metrics"]["training"]["epochs"] == 1
    assert m["final"]["input"]["shape"][1:] == [3, 32, 32] and m["final"]["input"]["preprocess"]["crop"] == 32
