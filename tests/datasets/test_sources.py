"""Folder and CSV datasets: class mapping, decoding in __getitem__, corrupt files named or skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.datasets import DatasetError, ImageFolderDataset, ImageListDataset, UnlabeledFolderDataset
from pipeline.errors import UserError
from pipeline.preprocess import Preprocess

PRE = Preprocess(resize=36, crop=32)


def test_image_folder_maps_sorted_class_names_to_indices(image_tree):
    ds = ImageFolderDataset(image_tree, PRE)
    assert ds.classes == ["ant", "bee", "cat"] and ds.num_classes == 3
    # ant: 2 files, bee: 3 + one nested, cat: 4 (notes.txt, ._img0.png and .ipynb_checkpoints ignored)
    assert ds.labels.tolist() == [0] * 2 + [1] * 4 + [2] * 4 and ds.labels.dtype == np.int64
    assert [p.name for p in ds.files()][:6] == ["img0.png", "img1.JPG", "img0.png", "img1.JPG", "img2.png", "deep.webp"]
    x, y = ds[5]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 1
    assert torch.equal(x, torch.from_numpy(PRE.load(ds.path(5))))  # same numbers as the eval recipe


def test_val_reuses_train_classes_and_rejects_unknown_folders(image_tree, tmp_path, make_image):
    val = tmp_path / "val"
    make_image(val / "cat" / "a.png")
    ds = ImageFolderDataset(val, PRE, classes=["ant", "bee", "cat"])
    assert ds.labels.tolist() == [2] and ds.classes == ["ant", "bee", "cat"]
    make_image(val / "dog" / "b.png")
    with pytest.raises(UserError, match="class folder 'dog' is not one of the 3 known classes"):
        ImageFolderDataset(val, PRE, classes=["ant", "bee", "cat"])


def test_folder_errors_name_the_folder(tmp_path, make_image):
    with pytest.raises(DatasetError, match=f"folder not found: {tmp_path / 'nope'}"):
        ImageFolderDataset(tmp_path / "nope", PRE)
    (tmp_path / "t" / "empty").mkdir(parents=True)
    make_image(tmp_path / "t" / "full" / "a.png")
    with pytest.raises(DatasetError, match=f"class folder {tmp_path / 't' / 'empty'} has no images"):
        ImageFolderDataset(tmp_path / "t", PRE)
    with pytest.raises(DatasetError, match="no class folders"):
        ImageFolderDataset(tmp_path / "t" / "full", PRE)


def test_unlabeled_folder_is_flat_unless_recursive(image_tree):
    ds = UnlabeledFolderDataset(image_tree / "bee", PRE)
    assert len(ds) == 3 and ds.labels.tolist() == [-1] * 3 and ds.classes is None and ds[0][1] == -1
    assert len(UnlabeledFolderDataset(image_tree / "bee", PRE, recursive=True)) == 4
    with pytest.raises(DatasetError, match="no images.*sub-folders not searched"):
        UnlabeledFolderDataset(image_tree, PRE)


def test_csv_list_with_header_names_and_relative_paths(image_tree, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.csv").write_text(
        "path,label\n../train/cat/img0.png,cat\n\n../train/ant/img1.JPG,ant\n" f"{image_tree / 'bee/img2.png'},bee\n")
    ds = ImageListDataset(lists / "train.csv", PRE)
    assert ds.classes == ["ant", "bee", "cat"] and ds.labels.tolist() == [2, 0, 1]
    assert ds[0][0].shape == (3, 32, 32) and ds.path(0).resolve() == (image_tree / "cat/img0.png").resolve()
    (lists / "ints.csv").write_text("../train/cat/img0.png,4\n../train/ant/img0.png,0\n")
    ints = ImageListDataset(lists / "ints.csv", PRE)
    assert ints.labels.tolist() == [4, 0] and ints.num_classes == 5
    assert ImageListDataset(lists / "train.csv", PRE, classes=["cat", "bee", "ant"]).labels.tolist() == [0, 2, 1]
    assert lists / "train.csv" in ds.digest_files()


@pytest.mark.parametrize("text, msg", [
    ("a.png,cat,extra\n", "line 1: expected 2 columns"),
    ("path,label\nmissing.png,cat\n", "line 2: file not found: .*missing.png"),
    ("a.png,dog\n", "line 1: label 'dog' is not one of the 2 known classes"),
    ("a.png,-1\n", "line 1: label -1: allowed: >= 0"),
    ("path,label\n", "no rows"),
])
def test_csv_errors_name_the_line(tmp_path, make_image, text, msg):
    make_image(tmp_path / "a.png")
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(DatasetError, match=msg):
        ImageListDataset(tmp_path / "l.csv", PRE, classes=["ant", "cat"] if "dog" in text else None)


def test_corrupt_images_raise_naming_the_file(image_tree, make_truncated_jpeg):
    (image_tree / "ant" / "zz_text.jpg").write_text("not an image")
    ds = ImageFolderDataset(image_tree, PRE)  # indexing reads no image
    bad = image_tree / "ant" / "zz_text.jpg"
    with pytest.raises(UserError, match=f"cannot read image {bad}: not an image.*skip_corrupt"):
        ds[2]
    cut = make_truncated_jpeg(image_tree / "cat" / "zz_cut.jpg")
    with pytest.raises(UserError, match=f"cannot read image {cut}: corrupt or truncated"):
        ImageFolderDataset(image_tree, PRE)[len(ds)]


def test_skip_corrupt_counts_files_left_out(image_tree, make_truncated_jpeg):
    text = image_tree / "ant" / "zz_text.jpg"
    text.write_text("not an image")
    cut = make_truncated_jpeg(image_tree / "cat" / "img9.jpg")
    ds = ImageFolderDataset(image_tree, PRE, skip_corrupt=True)
    assert ds.skipped == [str(text)] and len(ds) == 11  # the text file fails its header: left out now
    last = len(ds) - 1
    assert ds.path(last) == cut  # the truncated JPEG has a valid header: found on first read
    x, y = ds[last]  # replaced by the next readable image (wrapping round), counted once
    assert x.shape == (3, 32, 32) and y == ds.labels[0]
    ds[last]
    assert ds.skipped == [str(text), str(cut)]
    only = UnlabeledFolderDataset(image_tree / "cat", PRE, skip_corrupt=True)
    only._state.bad[:4] = 1  # as if the four good ones had failed too: the cut one is all that is left
    with pytest.raises(DatasetError, match="every one of the 5 images is unreadable"):
        only[0]
