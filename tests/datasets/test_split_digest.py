"""stratified_split is deterministic and stratified; files_digest hashes file bytes, not arrays."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pipeline.datasets import DatasetError, ImageFolderDataset, NpzDataset, dataset_digest, files_digest
from pipeline.datasets.split import stratified_split
from pipeline.errors import UserError
from pipeline.preprocess import Preprocess


def test_split_is_deterministic_disjoint_and_stratified():
    y = np.repeat(np.arange(4), [40, 20, 20, 11])
    parts = stratified_split(y, (0.65, 0.10, 0.25), seed=0)
    again = stratified_split(y.tolist(), (0.65, 0.10, 0.25), seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, stratified_split(y, seed=1), strict=True))
    allidx = np.concatenate(parts)
    assert len(allidx) == len(y) and len(np.unique(allidx)) == len(y)  # each sample exactly once
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)
    assert [np.bincount(y[p], minlength=4).tolist() for p in parts] == [[26, 13, 13, 7], [4, 2, 2, 1], [10, 5, 5, 3]]


def test_split_pins_the_exact_indices():
    """Guards the documented rule (per class in sorted order, one PCG64 stream) against silent changes."""
    train, val = stratified_split([0, 1] * 4, (0.5, 0.5), seed=7)
    rng = np.random.default_rng(7)
    c0, c1 = rng.permutation([0, 2, 4, 6]), rng.permutation([1, 3, 5, 7])
    assert train.tolist() == sorted([*c0[:2], *c1[:2]]) and val.tolist() == sorted([*c0[2:], *c1[2:]])


@pytest.mark.parametrize("labels, fractions, msg", [
    ([0, 1, -1], (0.5, 0.5), "labels must be >= 0"),
    ([[0, 1]], (0.5, 0.5), "1-D integer"),
    ([0.5, 1.0], (0.5, 0.5), "1-D integer"),
    ([0, 1], (0.5, 0.6), "sum to 1"),
    ([0, 1], (1.2, -0.2), "values >= 0"),
])
def test_split_rejects_bad_input(labels, fractions, msg):
    with pytest.raises(UserError, match=msg):
        stratified_split(labels, fractions)


def test_files_digest_follows_bytes_names_and_not_location(image_tree, tmp_path):
    files = sorted(p for p in image_tree.rglob("*.png"))
    d = files_digest(files, image_tree)
    assert d == files_digest(list(reversed(files)), image_tree) and len(d) == 64
    moved = tmp_path / "elsewhere"
    shutil.copytree(image_tree, moved)
    assert files_digest([moved / p.relative_to(image_tree) for p in files], moved) == d
    (moved / "cat" / "img0.png").rename(moved / "cat" / "img0b.png")
    renamed = [moved / p.relative_to(image_tree) for p in files]
    renamed = [p.with_name("img0b.png") if p.parts[-2:] == ("cat", "img0.png") else p for p in renamed]
    assert files_digest(renamed, moved) != d
    data = bytearray(files[0].read_bytes())
    data[-1] ^= 1
    files[0].write_bytes(bytes(data))
    assert files_digest(files, image_tree) != d
    with pytest.raises(DatasetError, match="cannot read .*nope.png"):
        files_digest([tmp_path / "nope.png"])


def test_dataset_digest_covers_files_and_class_mapping(image_tree, tmp_path):
    pre = Preprocess(crop=8)
    a = dataset_digest(ImageFolderDataset(image_tree, pre))
    assert a == dataset_digest(ImageFolderDataset(image_tree, pre))
    assert a != dataset_digest(ImageFolderDataset(image_tree, pre, classes=["ant", "bee", "cat", "dog"]))
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 1, 4, 4), np.float32), y=np.zeros(2, np.int64))
    assert len(dataset_digest(NpzDataset(tmp_path / "d.npz"))) == 64
