"""Image files through the whole pipeline: a class-per-folder tree, a CSV list, a flat unlabeled folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main

TINY_STAGES = """
train_teacher: {epochs: 3}
distill: {epochs: 3, batch_size: 16}
prune: {ratio: 0.4, finetune_epochs: 2, max_accuracy_drop: 60}
quantize: {calibration_samples: 32, max_accuracy_drop: 60, min_top1_agreement: 0.0}
benchmark: {warmup: 2, iterations: 200, batches: [1]}
"""


def write_config(root: Path, extra: str = "") -> Path:
    cfg = root / "config.yaml"
    cfg.write_text(
        "name: shapes\n"
        "teacher: {builtin: resnet_teacher, width: 0.25}\n"
        "student: {builtin: mobilenetv2_student, width: 0.5}\n"
        "data: {train: train, val: val, test: test.csv, unlabeled: unlabeled}\n"
        "preprocess: {resize: 28, crop: 24, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}\n"
        "workers: 0\ndevice: cpu\n" + extra + TINY_STAGES
    )
    return cfg


def test_image_folders_csv_and_unlabeled_run_every_stage(make_images, tmp_path, capsys):
    cfg = write_config(make_images(tmp_path / "shapes"))
    out = tmp_path / "run"
    assert main(["run", "--config", str(cfg), "--out", str(out), "--quiet", "--json", "-"]) == 0
    m = json.loads(capsys.readouterr().out)
    by = {s["name"]: s for s in m["stages"]}
    assert by["distill"]["metrics"]["images"] == 60 + 10 and by["distill"]["metrics"]["labeled_images"] == 60
    f = m["final"]
    assert f["input"]["shape"][1:] == [3, 24, 24]
    assert f["input"]["preprocess"] == {"resize": 28, "crop": 24, "mode": "RGB", "mean": [0.5] * 3,
                                        "std": [0.5] * 3, "interpolation": "bilinear"}
    assert f["eval_samples"] == {"samples": 15, "of": 15} and f["skipped_images"] == {}
    with np.load(out / "data" / "eval.npz") as z:
        assert z["x"].shape == (15, 3, 24, 24) and sorted(set(z["y"].tolist())) == [0, 1, 2]
    with np.load(out / "data" / "calib.npz") as z:
        assert z["x"].shape == (60, 3, 24, 24)  # bounded: at most 256 training images
    assert 0 <= f["accuracy"] <= 1 and by["quantize"]["metrics"]["calibration_samples"] == 32


def _corrupt(root: Path) -> Path:
    bad = root / "train" / "cross" / "007.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    return bad


def test_a_corrupt_image_is_exit_2_naming_the_file(make_images, tmp_path, capsys):
    root = make_images(tmp_path / "shapes", per_class=6)
    bad = _corrupt(root)
    code = main(["run", "--config", str(write_config(root)), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and "skip_corrupt" in err and "Traceback" not in err, err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1


def test_skip_corrupt_leaves_the_file_out_and_counts_it(make_images, tmp_path):
    from pipeline.config import load_config
    from pipeline.data import load_data
    from pipeline.stages.final import skipped_images

    root = make_images(tmp_path / "shapes", per_class=6)
    bad = _corrupt(root)
    cfg, base = load_config(write_config(root, "skip_corrupt: true\n"))
    d = load_data(cfg.data, base, cfg=cfg)
    # its header looks like a PNG, so it is indexed; the load-time value check decodes it and leaves it out
    assert d.count("train") == 18 and d.augment == "standard" and d.kind == "images"
    assert skipped_images(d) == {"train": {"count": 1, "files": [str(bad)]}}


def test_image_files_need_a_crop(make_images, tmp_path):
    from pipeline.config import load_config
    from pipeline.data import load_data
    from pipeline.errors import UserError

    root = make_images(tmp_path / "shapes", per_class=2)
    cfg = root / "c.yaml"
    cfg.write_text("teacher: {builtin: resnet_teacher}\nstudent: {builtin: mobilenetv2_student}\n"
                   "data: {train: train, val: val}\npreprocess: {resize: 28}\n")
    c, base = load_config(cfg)
    with pytest.raises(UserError, match=r"preprocess.crop = null: required for image files"):
        load_data(c.data, base, cfg=c)
    cfg.write_text(cfg.read_text().replace("preprocess: {resize: 28}\n", ""))
    c, base = load_config(cfg)
    with pytest.raises(UserError, match=r"data.train holds image files: preprocess is required"):
        load_data(c.data, base, cfg=c)


def test_one_folder_split_by_class(make_images, tmp_path):
    from pipeline.config import load_config
    from pipeline.data import load_data

    root = make_images(tmp_path / "shapes", per_class=10)
    cfg = root / "c.yaml"
    cfg.write_text("teacher: {builtin: resnet_teacher}\nstudent: {builtin: mobilenetv2_student}\n"
                   "data: {root: train, split: [0.6, 0.2, 0.2], split_seed: 1}\npreprocess: imagenet\n")
    c, base = load_config(cfg)
    d = load_data(c.data, base, cfg=c)
    assert (d.count("train"), d.count("val"), d.count("test")) == (18, 6, 6) and d.num_classes == 3
    assert d.input_shape == (3, 224, 224) and d.preprocess["crop"] == 224
    again = load_data(c.data, base, cfg=c)
    assert again.digest() == d.digest()
    assert np.array_equal(again.labels("val"), d.labels("val"))
