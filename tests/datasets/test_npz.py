"""NpzDataset memory-maps the arrays inside the zip instead of loading the file."""

from __future__ import annotations

import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest

from pipeline.datasets import DatasetError, NpzDataset
from pipeline.datasets.npz import npz_member


def _data(n=50, c=3, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, c, size, size)).astype(np.float32), rng.integers(0, 4, n).astype(np.int64)


def test_uncompressed_npz_is_memory_mapped_not_loaded(tmp_path):
    x, y = _data(n=400, size=32)  # 4.9 MB of images
    np.savez(tmp_path / "d.npz", x=x, y=y)
    tracemalloc.start()
    ds = NpzDataset(tmp_path / "d.npz")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert isinstance(ds.images, np.memmap) and peak < 500_000  # labels (3 kB) and headers only
    assert len(ds) == 400 and ds.input_shape == (3, 32, 32) and np.array_equal(ds.labels, y)
    xi, yi = ds[7]
    assert np.array_equal(xi.numpy(), x[7]) and yi == y[7] and xi.dtype.is_floating_point
    assert ds[-1][1] == y[-1]
    with pytest.raises(IndexError):
        ds[400]


def test_pickled_dataset_does_not_carry_the_images(tmp_path):
    x, y = _data(n=400, size=32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = NpzDataset(tmp_path / "d.npz")
    blob = pickle.dumps(ds)  # what a spawned DataLoader worker receives
    assert len(blob) < 100_000
    again = pickle.loads(blob)
    assert np.array_equal(again[3][0].numpy(), x[3]) and isinstance(again.images, np.memmap)


def test_fortran_order_and_float64_are_read_right(tmp_path):
    x, y = _data(n=5)
    np.savez(tmp_path / "f.npz", x=np.asfortranarray(x.astype(np.float64)), y=y.astype(np.int32))
    ds = NpzDataset(tmp_path / "f.npz")
    assert np.allclose(ds[2][0].numpy(), x[2]) and ds[2][0].dtype.is_floating_point and ds.labels.dtype == np.int64


def test_compressed_npz_is_extracted_once_to_the_cache(tmp_path):
    x, y = _data()
    np.savez_compressed(tmp_path / "c.npz", x=x, y=y)
    with pytest.raises(DatasetError, match="is compressed .*give a cache folder"):
        NpzDataset(tmp_path / "c.npz")
    ds = NpzDataset(tmp_path / "c.npz", cache_dir=tmp_path / "cache")
    assert isinstance(ds.images, np.memmap) and np.array_equal(ds[4][0].numpy(), x[4])
    cached = sorted((tmp_path / "cache" / "npz").glob("c-x-*.npy"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    NpzDataset(tmp_path / "c.npz", cache_dir=tmp_path / "cache")
    assert cached[0].stat().st_mtime_ns == stamp  # reused, not extracted again
    np.savez_compressed(tmp_path / "c.npz", x=x + 1, y=y)  # new content: a new cache entry
    assert np.array_equal(NpzDataset(tmp_path / "c.npz", cache_dir=tmp_path / "cache")[4][0].numpy(), x[4] + 1)


def test_normalisation_and_unlabeled(tmp_path):
    x, _ = _data(n=4, c=2)
    np.savez(tmp_path / "u.npz", x=x)
    ds = NpzDataset(tmp_path / "u.npz", labeled=False, mean=[1.0, -1.0], std=[2.0])
    assert ds.labels.tolist() == [-1] * 4
    assert np.allclose(ds[1][0].numpy()[0], (x[1, 0] - 1) / 2) and np.allclose(ds[1][0].numpy()[1], (x[1, 1] + 1) / 2)


@pytest.mark.parametrize("arrays, msg", [
    ({"x": np.zeros((2, 3, 4), np.float32), "y": np.zeros(2, np.int64)}, "x must be NCHW"),
    ({"x": np.zeros((2, 1, 4, 4), np.uint8), "y": np.zeros(2, np.int64)}, "x must be float32"),
    ({"x": np.zeros((2, 1, 4, 4), np.float32)}, r"no array 'y' \(found x\)"),
    ({"x": np.zeros((2, 1, 4, 4), np.float32), "y": np.zeros(3, np.int64)}, "one label per image"),
    ({"x": np.zeros((2, 1, 4, 4), np.float32), "y": np.array([0, -2])}, "labels must be >= 0"),
    ({"x": np.zeros((2, 1, 4, 4), np.float32), "y": np.zeros(2, np.float32)}, "y must be int64"),
])
def test_bad_files_name_the_path(tmp_path, arrays, msg):
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(DatasetError, match=msg) as e:
        NpzDataset(tmp_path / "b.npz")
    assert str(tmp_path / "b.npz") in str(e.value)


def test_not_a_zip_or_missing(tmp_path):
    (tmp_path / "t.npz").write_text("hello")
    with pytest.raises(DatasetError, match="cannot read as an npz file"):
        NpzDataset(tmp_path / "t.npz")
    with pytest.raises(DatasetError, match="npz file not found"):
        NpzDataset(tmp_path / "none.npz")


def test_member_offset_honours_zip_extra_fields(tmp_path):
    """A member written with a local-header extra field (as other zip writers do) still maps right."""
    a = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    src = tmp_path / "x.npy"
    np.save(src, a)
    with zipfile.ZipFile(tmp_path / "e.npz", "w", zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo("pad.npy"), b"")
        info = zipfile.ZipInfo("x.npy")
        info.extra = b"\xfe\xca\x04\x00abcd"  # an unknown 4-byte extra block
        z.writestr(info, src.read_bytes())
    m = npz_member(tmp_path / "e.npz", "x", None)
    assert isinstance(m, np.memmap) and np.array_equal(m, a)
