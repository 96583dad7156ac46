"""make_loader: worker processes change nothing but speed; epochs, skips and errors cross processes."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from pipeline.datasets import DatasetError, ImageFolderDataset, UnlabeledFolderDataset, make_augment, make_loader
from pipeline.datasets.loader import default_workers
from pipeline.errors import UserError
from pipeline.preprocess import Preprocess

PRE = Preprocess(resize=36, crop=32)


def _epochs(loader, n=2):
    return [[(x.clone(), y.clone()) for x, y in loader] for _ in range(n)]


def test_two_workers_give_the_same_batches_as_none(image_tree):
    ds = ImageFolderDataset(image_tree, PRE, augment=make_augment("standard", 5))
    main = _epochs(make_loader(ds, 4, shuffle=True, seed=1, workers=0))
    loader = make_loader(ds, 4, shuffle=True, seed=1, workers=2)
    assert loader.persistent_workers and loader.num_workers == 2 and not loader.pin_memory
    workers = _epochs(loader)
    for a, b in zip(main, workers, strict=True):
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert workers[0][0][0].shape == (4, 3, 32, 32) and workers[0][0][1].dtype == torch.int64
    flat = [torch.cat([x for x, _ in ep]) for ep in workers]
    assert not torch.equal(flat[0], flat[1])  # epoch 1 reshuffles and re-augments
    assert sorted(torch.cat([y for _, y in workers[0]]).tolist()) == sorted(ds.labels.tolist())
    loader.set_epoch(1)  # resuming at epoch 1 reproduces it: order and augmentation depend on (seed, epoch)
    assert all(torch.equal(x, xb) for (x, _), (xb, _) in zip(loader, workers[1], strict=True))


def test_set_epoch_resumes_and_reaches_subsets(image_tree):
    ds = ImageFolderDataset(image_tree, PRE, augment=make_augment("shift", 0))
    sub = Subset(ds, [0, 3, 5])
    loader = make_loader(sub, 3, shuffle=False, seed=0, workers=0)
    first = next(iter(loader))[0]
    assert ds.epoch == 0 and loader.epoch == 1
    loader.set_epoch(0)
    assert torch.equal(next(iter(loader))[0], first)
    next(iter(loader))
    assert ds.epoch == 1


def test_skips_found_in_workers_are_seen_here(image_tree, make_truncated_jpeg):
    cut = make_truncated_jpeg(image_tree / "ant" / "img5.jpg")
    ds = ImageFolderDataset(image_tree, PRE, skip_corrupt=True)
    n = sum(len(y) for _, y in make_loader(ds, 3, shuffle=False, seed=0, workers=2))
    assert n == len(ds) and ds.skipped == [str(cut)]


def test_worker_errors_stay_one_line_naming_the_file(image_tree):
    bad = image_tree / "bee" / "img7.jpg"
    bad.write_text("not a jpeg")
    ds = UnlabeledFolderDataset(image_tree / "bee", PRE)
    caught = None
    try:
        list(make_loader(ds, 2, shuffle=False, seed=0, workers=2))
    except DatasetError as e:
        caught = e
    assert caught is not None
    # torch re-raises from a frame that refers to the exception: a reference cycle that keeps the
    # workers until the garbage collector runs, whose shutdown then waits 5 s per worker. Break it.
    caught.__traceback__ = None
    msg = str(caught)
    assert "\n" not in msg and msg.startswith(f"image folder {image_tree / 'bee'}: cannot read image {bad}")
    assert caught.exit_code == 2


@pytest.mark.parametrize("kwargs, msg", [
    ({"batch_size": 0}, "batch_size = 0"), ({"workers": -1}, "workers = -1"),
    ({"sampler": [0, 1]}, "not both"),
])
def test_bad_arguments(image_tree, kwargs, msg):
    ds = UnlabeledFolderDataset(image_tree / "bee", PRE)
    args = {"batch_size": 2, "shuffle": True, "seed": 0, "workers": 0, **kwargs}
    with pytest.raises(UserError, match=msg):
        make_loader(ds, **args)


def test_default_workers_is_capped_at_four():
    assert 1 <= default_workers() <= 4


def test_memory_stays_bounded_over_200_images(tmp_path, make_image):
    """Iterating 200 64x64 images (9.8 MB as float32) keeps only about a batch alive."""
    for i in range(200):
        make_image(tmp_path / "u" / f"{i:03d}.png", (64, 64), i)
    ds = UnlabeledFolderDataset(tmp_path / "u", Preprocess(crop=64))
    loader = make_loader(ds, 8, shuffle=False, seed=0, workers=0)
    next(iter(loader))  # warm-up: imports and one-off allocations
    tracemalloc.start()
    seen = 0
    for x, _ in loader:
        seen += len(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    one_batch = 8 * 3 * 64 * 64 * 4
    assert seen == 200 and peak < 6 * one_batch, f"peak {peak} bytes for batches of {one_batch}"
    assert np.isfinite(x.numpy()).all()
