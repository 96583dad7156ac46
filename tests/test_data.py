"""Data loading: the digits split is fixed and documented; npz data is validated and normalised."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.config import NpzData
from pipeline.data import load_data, load_digits
from pipeline.errors import UserError
from pipeline.stages.common import student_train_set


def test_digits_split_is_fixed_and_disjoint():
    d = load_digits(16, 0)
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
    x = np.ones((6, 2, 4, 4), np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    spec = NpzData(train=_npz(tmp_path / "a.npz", x, y), val=_npz(tmp_path / "b.npz", x, y),
                   unlabeled=_npz(tmp_path / "u.npz", x[:4]), mean=[0.5, 1.0], std=[0.5, 2.0])
    d = load_data(spec, tmp_path)
    assert d.num_classes == 3 and np.array_equal(d.test_x, d.val_x)  # no test split: val is the held-out one
    assert np.allclose(d.train_x[:, 0], 1.0) and np.allclose(d.train_x[:, 1], 0.0)
    xs, ys, has = student_train_set(SimpleNamespace(data=d))
    assert len(xs) == 10 and has.sum() == 6 and not has[6:].any()


def test_npz_rejects_non_nchw_and_float_labels(tmp_path):
    spec = NpzData(train=_npz(tmp_path / "a.npz", np.ones((4, 8, 8), np.float32), np.zeros(4, np.int64)),
                   val=_npz(tmp_path / "b.npz", np.ones((4, 1, 8, 8), np.float32), np.zeros(4, np.int64)))
    with pytest.raises(UserError, match="a.npz: x must be NCHW"):
        load_data(spec, tmp_path)
    spec = NpzData(train=_npz(tmp_path / "c.npz", np.ones((4, 1, 8, 8), np.float32), np.zeros(4, np.float32)),
                   val=_npz(tmp_path / "b.npz", np.ones((4, 1, 8, 8), np.float32), np.zeros(4, np.int64)))
    with pytest.raises(UserError, match="c.npz: y must be int64"):
        load_data(spec, tmp_path)


def test_corrupt_npz_names_the_path(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    spec = NpzData(train="bad.npz", val="bad.npz")
    with pytest.raises(UserError, match="bad.npz"):
        load_data(spec, tmp_path)
