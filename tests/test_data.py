"""Data loading: the digits split is fixed and documented; npz data is validated and normalised."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.config import FileData
from pipeline.data import ImageStats, load_data, load_digits, scan_images
from pipeline.errors import UserError


def test_digits_split_is_fixed_and_disjoint():
    d = load_digits(16, 0)
    assert load_data(SimpleNamespace(builtin="digits", image_size=16, split_seed=0), Path(".")).digest() == d.digest()
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (1167, 180, 450)
    assert d.train_x.shape[1:] == (1, 16, 16) and d.train_x.dtype == np.float32
    assert d.digest() == load_digits(16, 0).digest() != load_digits(16, 1).digest()
    # every class is in every split (stratified)
    assert all(len(np.unique(y)) == 10 for y in (d.train_y, d.val_y, d.test_y))


def _npz(path, x, y=None):
    arrays = {"x": x} if y is None else {"x": x, "y": y}
    np.savez(path, **arrays)
    return path.name


def test_npz_with_unlabeled_images_and_normalisation(tmp_path):
    x = np.random.default_rng(0).uniform(0, 1, (6, 2, 4, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    spec = FileData(train=_npz(tmp_path / "a.npz", x, y), val=_npz(tmp_path / "b.npz", x, y),
                   unlabeled=_npz(tmp_path / "u.npz", x[:4]), mean=[0.5, 1.0], std=[0.5, 2.0])
    d = load_data(spec, tmp_path)
    assert d.num_classes == 3 and d.splits["test"] is d.splits["val"] and d.test_is_val  # val is the held-out one
    tx, ty = d.sample("train", 6)
    assert np.allclose(tx[:, 0], (x[:, 0] - 0.5) / 0.5) and np.allclose(tx[:, 1], (x[:, 1] - 1) / 2)
    assert np.array_equal(ty, y) and d.kind == "npz" and d.augment == "shift"
    ys, has = d.student_labels()
    assert len(ys) == 10 and has.sum() == 6 and not has[6:].any()
    assert len(d.student_set(has)) == 10 and len(d.student_set(has, labeled_only=True)) == 6
    assert isinstance(d.splits["train"].images, np.memmap)  # memory-mapped, never loaded whole


def test_npz_rejects_non_nchw_and_float_labels(tmp_path):
    spec = FileData(train=_npz(tmp_path / "a.npz", np.ones((4, 8, 8), np.float32), np.zeros(4, np.int64)),
                   val=_npz(tmp_path / "b.npz", np.ones((4, 1, 8, 8), np.float32), np.zeros(4, np.int64)))
    with pytest.raises(UserError, match="a.npz: x must be NCHW"):
        load_data(spec, tmp_path)
    spec = FileData(train=_npz(tmp_path / "c.npz", np.ones((4, 1, 8, 8), np.float32), np.zeros(4, np.float32)),
                   val=_npz(tmp_path / "b.npz", np.ones((4, 1, 8, 8), np.float32), np.zeros(4, np.int64)))
    with pytest.raises(UserError, match="c.npz: y must be int64"):
        load_data(spec, tmp_path)


def test_corrupt_npz_names_the_path(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    spec = FileData(train="bad.npz", val="bad.npz")
    with pytest.raises(UserError, match="bad.npz"):
        load_data(spec, tmp_path)


# --- Content checks: bad data fails before any training, in one line naming the split and file -----


def _images(n: int, seed: int = 0, classes: int = 3, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """n images in 0..scale (2 channels, 8x8), labels cycling through every class."""
    x = np.random.default_rng(seed).uniform(0, scale, (n, 2, 8, 8)).astype(np.float32)
    return x, (np.arange(n) % classes).astype(np.int64)


def _run_error(cfg: Path, tmp_path: Path, capsys) -> str:
    """Run the pipeline through the CLI; it must exit 2 before training, printing exactly one line."""
    code = main(["run", "--config", str(cfg), "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("edgepipe: error: ") and "Traceback" not in err, err
    assert not (tmp_path / "r" / "train_teacher").exists()  # nothing was trained
    return lines[0]


def _project(cfg: Path, data_line: str | None = None, num_classes: int | None = None, **splits) -> Path:
    """Overwrite the external project's npz files (name=(x, y)) and optionally its data line."""
    for name, (x, y) in splits.items():
        _npz(cfg.parent / f"{name}.npz", x, y)
    text = cfg.read_text()
    if data_line:
        text = text.replace("data: {train: train.npz, val: val.npz, test: test.npz}", data_line)
    if num_classes:
        text = f"num_classes: {num_classes}\n" + text
    cfg.write_text(text)
    return cfg


def test_empty_split_is_exit_2(external_project, tmp_path, capsys):
    x, y = _images(0)
    line = _run_error(_project(external_project, val=(x, y)), tmp_path, capsys)
    assert "data.val" in line and "val.npz" in line and "no images" in line and "(N, 2, 8, 8)" in line


def test_empty_unlabeled_split_is_exit_2(external_project, tmp_path, capsys):
    np.savez(external_project.parent / "extra.npz", x=np.zeros((0, 2, 8, 8), np.float32))
    cfg = _project(external_project, "data: {train: train.npz, val: val.npz, test: test.npz, unlabeled: extra.npz}")
    line = _run_error(cfg, tmp_path, capsys)
    assert "data.unlabeled" in line and "extra.npz" in line and "no images" in line


def test_nan_and_inf_images_are_exit_2(external_project, tmp_path, capsys):
    x, y = _images(40)
    x[7, 1, 3, 3] = np.nan
    x[21, 0, 0, 0] = np.inf
    line = _run_error(_project(external_project, train=(x, y)), tmp_path, capsys)
    assert "data.train" in line and "train.npz" in line
    assert "2 of 40 images contain NaN or Inf (first: image 7)" in line


def test_constant_images_are_exit_2(external_project, tmp_path, capsys):
    x, y = _images(30)
    x[[4, 11, 12]] = 0.0
    line = _run_error(_project(external_project, test=(x, y)), tmp_path, capsys)
    assert "data.test" in line and "test.npz" in line
    assert "3 of 30 images are constant" in line and "images 4, 11, 12;" in line


def test_negative_labels_are_exit_2(external_project, tmp_path, capsys):
    x, y = _images(12)
    y[5] = -1
    line = _run_error(_project(external_project, val=(x, y)), tmp_path, capsys)
    assert "data.val" in line and "val.npz" in line and "labels must be >= 0, found -1" in line


def test_labels_beyond_num_classes_are_exit_2(external_project, tmp_path, capsys):
    x, y = _images(12)
    y[3] = 3  # with num_classes: 3, classes are 0..2
    line = _run_error(_project(external_project, num_classes=3, train=(x, y)), tmp_path, capsys)
    assert "num_classes" in line and "3" in line
    # load_data itself names the split and file when given the config's num_classes
    spec = FileData(train="train.npz", val="val.npz", test="test.npz")
    msg = r"data\.train: .*train\.npz: 1 label is >= num_classes = 3 \(first: y\[3\] = 3\)"
    with pytest.raises(UserError, match=msg):
        load_data(spec, external_project.parent, num_classes=3)


def test_class_missing_from_train_is_exit_2(external_project, tmp_path, capsys):
    x, y = _images(20, classes=2)  # train has classes 0 and 1 only; val and test have 0, 1, 2
    line = _run_error(_project(external_project, train=(x, y)), tmp_path, capsys)
    assert "data.train" in line and "train.npz" in line and "no images of class 2, but data.val" in line


def test_raw_0_255_pixels_with_0_1_normalisation_is_exit_2(external_project, tmp_path, capsys):
    splits = {k: _images(20, seed=i, scale=255) for i, k in enumerate(("train", "val", "test"))}
    cfg = _project(external_project, "data: {train: train.npz, val: val.npz, test: test.npz, "
                                     "mean: [0.485, 0.456], std: [0.229, 0.224]}", **splits)
    line = _run_error(cfg, tmp_path, capsys)
    assert "data.train" in line and "are for 0..1 images" in line
    assert "divide x by 255" in line and "data.mean: [123.7, 116.3]" in line and "data.std: [58.4, 57.12]" in line


def test_0_1_pixels_with_0_255_normalisation_is_exit_2(external_project, tmp_path, capsys):
    splits = {k: _images(20, seed=i) for i, k in enumerate(("train", "val", "test"))}
    cfg = _project(external_project, "data: {train: train.npz, val: val.npz, test: test.npz, "
                                     "mean: [123.7], std: [58.4]}", **splits)
    line = _run_error(cfg, tmp_path, capsys)
    assert "data.train" in line and "are for 0..255 images" in line and "data.mean: [0.4851]" in line


def test_raw_0_255_pixels_without_normalisation_is_exit_2(external_project, tmp_path, capsys):
    splits = {k: _images(20, seed=i, scale=255) for i, k in enumerate(("train", "val", "test"))}
    line = _run_error(_project(external_project, **splits), tmp_path, capsys)
    assert "data.train" in line and "data.mean/std are not set" in line and "data.mean: [127.5]" in line


def test_checks_work_batch_by_batch_in_bounded_memory():
    x, y = _images(100)
    x[[30, 31, 77], 0, 2, 2] = np.nan
    x[55] = 0.25
    whole = scan_images(ImageStats("data.train", "t.npz"), x, y, batch=len(x))
    chunked = ImageStats("data.train", "t.npz")
    for i in range(0, 100, 7):  # as a stream from disk would deliver them
        chunked.add(x[i:i + 7], y[i:i + 7])
    for st in (whole, chunked):
        assert (st.count, st.nonfinite, st.nonfinite_first) == (100, 3, 30)
        assert (st.constant, st.constant_first, st.constant_value) == (1, [55], 0.25)
        assert st.class_counts == {0: 34, 1: 33, 2: 33}
    assert np.array_equal(whole.lo, chunked.lo) and np.array_equal(whole.hi, chunked.hi)
    # a stream fails at the first bad batch, without waiting for the rest (final=False)
    stream = ImageStats("data.train", "t.npz").add(x[28:35], y[28:35])
    with pytest.raises(UserError, match="2 of 7 images contain NaN"):
        stream.check(final=False)


def test_good_data_passes_every_check(external_project):
    d = load_data(FileData(train="train.npz", val="val.npz", test="test.npz"), external_project.parent, num_classes=3)
    assert d.num_classes == 3 and d.count("train") == 192


def test_compressed_npz_is_extracted_once_to_the_cache_and_mapped(tmp_path):
    x, y = _images(12)
    np.savez_compressed(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "val.npz", x=x[:6], y=y[:6])
    d = load_data(FileData(train="train.npz", val="val.npz"), tmp_path, cache_dir=tmp_path / "cache")
    assert isinstance(d.splits["train"].images, np.memmap) and (tmp_path / "cache" / "npz").is_dir()
    assert np.array_equal(d.sample("train", 12)[0], x) and d.count("test") == 6


def test_factory_data_gives_torch_datasets(tmp_path):
    from pipeline.config import FactoryData

    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def make(n=12):\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    ds = lambda k: TensorDataset(torch.rand(k, 2, 8, 8, generator=g), torch.arange(k) % 3)\n"
        "    return {'train': ds(n), 'val': ds(6)}\n")
    cfg = SimpleNamespace(workers=0, augment=None, preprocess=None, skip_corrupt=False, seed=0)
    d = load_data(FactoryData(factory="mydata:make", kwargs={"n": 9}), tmp_path, cfg=cfg)
    assert (d.kind, d.num_classes, d.input_shape, d.count("train"), d.test_is_val) == ("factory", 3, (2, 8, 8), 9, True)
    assert d.augment == "none" and sum(len(b[1]) for b in d.loader("test", 4)) == 6
    with pytest.raises(UserError, match=r"data.factory = 'mydata:nope': cannot import it"):
        load_data(FactoryData(factory="mydata:nope"), tmp_path, cfg=cfg)


def test_image_batches_are_checked_as_they_are_read(tmp_path):
    from pipeline.config import FactoryData

    (tmp_path / "nandata.py").write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def make():\n"
        "    x = torch.rand(12, 1, 4, 4)\n"
        "    x[9, 0, 1, 1] = float('nan')  # found only when its batch is read\n"
        "    ds = TensorDataset(x, torch.arange(12) % 2)\n"
        "    return {'train': ds, 'val': TensorDataset(torch.rand(4, 1, 4, 4), torch.arange(4) % 2)}\n")
    cfg = SimpleNamespace(workers=0, augment=None, preprocess=None, skip_corrupt=False, seed=0)
    d = load_data(FactoryData(factory="nandata:make"), tmp_path, cfg=cfg)
    assert sum(len(b[0]) for b in d.loader("train", 4)) == 12  # unchecked: reads through
    with pytest.raises(UserError, match=r"data.train: batch 2 of the loader .*1 of 4 images contain NaN"):
        list(d.loader("train", 4, check=True))
