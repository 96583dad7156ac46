"""Augmentations: reproducible per (seed, epoch, index), the shift matches training's, crops stay inside."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.datasets import ImageFolderDataset, NpzDataset, make_augment
from pipeline.datasets.augment import Augment, random_resized_crop_box, shift_array, shift_set
from pipeline.errors import UserError
from pipeline.preprocess import Preprocess
from pipeline.training import shift_images

PRE = Preprocess(resize=36, crop=32)


def _img(seed=0, size=(48, 40)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("name", ["shift", "standard"])
def test_same_seed_epoch_index_same_result(name):
    a, b = make_augment(name, seed=3), make_augment(name, seed=3)
    img = _img()
    first = a.image(img, PRE, epoch=2, index=5)
    assert first.shape == (3, 32, 32) and first.dtype == np.float32
    assert np.array_equal(first, b.image(img, PRE, epoch=2, index=5))
    others = [a.image(img, PRE, 3, 5), a.image(img, PRE, 2, 6), make_augment(name, 4).image(img, PRE, 2, 5)]
    assert sum(not np.array_equal(first, o) for o in others) >= 2  # a shift can repeat by chance; not all


def test_shift_matches_training_shift_images():
    import pipeline.training as training
    from pipeline.training.batches import ShiftAugment

    assert not hasattr(training, "shift_set") and ShiftAugment(32).shifts == shift_set(32)  # one shift_set
    x = np.random.default_rng(0).normal(size=(3, 16, 16)).astype(np.float32)
    for dy, dx in [(1, -1), (-1, 0), (0, 1), (0, 0)]:
        ref = shift_images(torch.from_numpy(x[None].copy()), dy, dx)[0].numpy()
        assert np.array_equal(shift_array(x, dy, dx), ref)


def test_none_is_the_eval_recipe_and_names_are_checked():
    assert make_augment("none") is None and make_augment(None) is None
    img = _img()
    assert np.array_equal(Augment("none").image(img, PRE, 0, 0), PRE(img))
    with pytest.raises(UserError, match="augment = 'flip': allowed: none, shift, standard"):
        make_augment("flip")


def test_random_resized_crop_boxes_stay_inside_and_fall_back_to_center():
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, w, h = random_resized_crop_box(50, 30, rng)
        assert left >= 0 and left + w <= 50 and top >= 0 and top + h <= 30 and w > 0 and h > 0
        assert 0.08 * 1500 * 0.5 <= w * h <= 1500  # within the area range (rounding aside)
    # A 100x4 strip never fits a 3/4..4/3 box of >= 8 % area: center crop at the widest allowed ratio.
    assert random_resized_crop_box(100, 4, np.random.default_rng(0), scale=(0.5, 1.0)) == (47, 0, 5, 4)


def test_standard_flips_about_half_the_time():
    a = make_augment("standard", 0)
    flips = 0
    img = Image.fromarray(np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1)))  # brightness rises left to right
    pre = Preprocess(crop=32, mode="L", mean=(0.0,), std=(1.0,))
    for i in range(100):
        x = a.image(img, pre, 0, i)[0]
        flips += x[:, 0].mean() > x[:, -1].mean()
    assert 30 <= flips <= 70


def test_standard_on_npz_arrays(tmp_path):
    x = np.random.default_rng(0).normal(size=(6, 2, 12, 12)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(6, np.int64))
    ds = NpzDataset(tmp_path / "d.npz", augment=make_augment("standard", 1))
    out = ds[2][0]
    assert out.shape == (2, 12, 12) and out.dtype == torch.float32 and not torch.equal(out, torch.from_numpy(x[2]))
    assert torch.equal(out, ds[2][0])
    ds.set_epoch(1)
    assert not torch.equal(out, ds[2][0])


def test_dataset_epoch_drives_the_augmentation(image_tree):
    ds = ImageFolderDataset(image_tree, PRE, augment=make_augment("standard", 0))
    e0 = ds[1][0]
    ds.set_epoch(1)
    assert ds.epoch == 1 and not torch.equal(e0, ds[1][0])
    ds.set_epoch(0)
    assert torch.equal(e0, ds[1][0])
    with pytest.raises(ValueError, match="epoch = -1"):
        ds.set_epoch(-1)
