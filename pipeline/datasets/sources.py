"""Where images come from: a class-per-folder tree, a flat folder, a CSV list, or an npz file.

Folder datasets index file names only (sorted, so indices are stable across runs and machines) and
decode each image in `__getitem__`. Class indices follow torchvision's ImageFolder: the sorted class
folder names, 0..K-1, so a teacher trained with torchvision sees the same label numbers. Unlike
torchvision, hidden folders and files (".ipynb_checkpoints", "._x.jpg") are ignored.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.datasets.augment import Augment
from pipeline.datasets.base import IMAGE_EXTENSIONS, DatasetError, ImageFilesDataset, is_image_file
from pipeline.datasets.npz import NpzDataset
from pipeline.preprocess import Preprocess

__all__ = ["ImageFolderDataset", "UnlabeledFolderDataset", "ImageListDataset", "NpzDataset"]


def _walk_images(folder: Path, recursive: bool = True) -> list[str]:
    """Image files under `folder`, as sorted paths relative to it (symlinked folders followed)."""
    if not recursive:
        return sorted(e.name for e in os.scandir(folder) if e.is_file() and is_image_file(e.name))
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, folder)
        found += [f if rel == "." else f"{rel}/{f}".replace(os.sep, "/") for f in filenames if is_image_file(f)]
    return sorted(found)


def _check_dir(root: Path, what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{what}: folder not found: {root}")
    return root


class ImageFolderDataset(ImageFilesDataset):
    """`root/<class>/**/*.{jpg,jpeg,png,bmp,webp}`; labels are indices into the sorted class names.

    Args:
        root: the folder holding one sub-folder per class.
        preprocess: how an image becomes an array (eval recipe; also sizes the augmentation).
        augment: training augmentation, or None.
        classes: the class names in index order (pass train's `classes` to val/test so indices
            agree); a class folder not in it is an error. Default: the sorted folder names.
        skip_corrupt: leave unreadable files out (listed in `skipped`) instead of raising.
    Raises:
        DatasetError: missing root, no class folders, a class folder without images, an unknown class.
    """

    def __init__(self, root: str | os.PathLike, preprocess: Preprocess, augment: Augment | None = None,
                 classes: Sequence[str] | None = None, skip_corrupt: bool = False):
        what = f"image folder {root}"
        root = _check_dir(Path(root), what)
        found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        if not found:
            raise DatasetError(f"{what}: no class folders (expected {root}/<class name>/<images>)")
        if classes is None:
            classes = found
        else:
            classes = [str(c) for c in classes]
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise DatasetError(f"{what}: class folder {unknown[0]!r} is not one of the {len(classes)} known "
                                   f"classes ({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")
        index = {c: i for i, c in enumerate(classes)}
        paths, labels = [], []
        for name in found:
            files = _walk_images(root / name)
            if not files:
                raise DatasetError(f"{what}: class folder {root / name} has no images "
                                   f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
            paths += [f"{name}/{f}" for f in files]
            labels += [index[name]] * len(files)
        super().__init__(root, paths, labels, preprocess, augment, skip_corrupt, list(classes), what)


class UnlabeledFolderDataset(ImageFilesDataset):
    """Images in one folder (sub-folders too when `recursive`), all labelled -1.

    For images the student learns from through the teacher alone.

    Args:
        root: the folder.
        preprocess: how an image becomes an array.
        augment: training augmentation, or None.
        skip_corrupt: leave unreadable files out (listed in `skipped`) instead of raising.
        recursive: also take images in sub-folders.
    """

    def __init__(self, root: str | os.PathLike, preprocess: Preprocess, augment: Augment | None = None,
                 skip_corrupt: bool = False, recursive: bool = False):
        what = f"image folder {root}"
        root = _check_dir(Path(root), what)
        paths = _walk_images(root, recursive)
        if not paths:
            raise DatasetError(f"{what}: no images (extensions {', '.join(IMAGE_EXTENSIONS)}"
                               f"{'' if recursive else ', sub-folders not searched'})")
        super().__init__(root, paths, [-1] * len(paths), preprocess, augment, skip_corrupt, None, what)


class ImageListDataset(ImageFilesDataset):
    """Images listed in a CSV of `path,label` rows; paths relative to the CSV's folder (or absolute).

    A first row `path,label` is a header. Labels are either all integers (class indices >= 0) or
    class names; names map to indices through `classes`, or through their sorted set when it is None.

    Args:
        csv_path: the list.
        preprocess: how an image becomes an array.
        augment: training augmentation, or None.
        classes: class names in index order (pass train's `classes` to val/test).
        skip_corrupt: leave missing or unreadable files out (listed in `skipped`) instead of raising.
    Raises:
        DatasetError: a missing CSV or listed file, a malformed row or an unknown label, naming the line.
    """

    def __init__(self, csv_path: str | os.PathLike, preprocess: Preprocess, augment: Augment | None = None,
                 classes: Sequence[str] | None = None, skip_corrupt: bool = False):
        self.csv_path = Path(csv_path)
        what = f"image list {self.csv_path}"
        rows = _read_rows(self.csv_path, what)
        base = self.csv_path.parent
        missing, paths, raw = [], [], []
        for line, rel, label in rows:
            p = Path(os.path.expanduser(rel))
            full = p if p.is_absolute() else base / p
            if not full.is_file():
                if not skip_corrupt:
                    raise DatasetError(f"{what} line {line}: file not found: {full}")
                missing.append(str(full))
                continue
            paths.append(os.path.relpath(full, base).replace(os.sep, "/"))
            raw.append((line, label))
        labels, classes = _labels(raw, classes, what)
        super().__init__(base, paths, labels, preprocess, augment, skip_corrupt, classes, what)
        self._skipped_at_index = missing + self._skipped_at_index

    def digest_files(self) -> list[Path]:
        """The CSV itself (it holds the labels) and every listed file."""
        return [self.csv_path] + list(self.files())


def _read_rows(path: Path, what: str) -> list[tuple[int, str, str]]:
    if not path.is_file():
        raise DatasetError(f"{what}: file not found")
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheets write a BOM
        for line, row in enumerate(csv.reader(f), 1):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 2:
                raise DatasetError(f"{what} line {line}: expected 2 columns 'path,label', got {len(row)}: {row}")
            rel, label = row[0].strip(), row[1].strip()
            if line == 1 and (rel.lower(), label.lower()) == ("path", "label"):
                continue
            if not rel or not label:
                raise DatasetError(f"{what} line {line}: empty path or label: {row}")
            rows.append((line, rel, label))
    if not rows:
        raise DatasetError(f"{what}: no rows (expected 'path,label' lines)")
    return rows


def _labels(raw: list[tuple[int, str]], classes: Sequence[str] | None, what: str) -> tuple[list[int], list[str]]:
    """Integer labels stay indices; otherwise every label is a class name."""
    all_int = all(_is_int(lab) for _, lab in raw)
    if all_int:
        labels = [int(lab) for _, lab in raw]
        for (line, _), v in zip(raw, labels, strict=True):
            if v < 0 or (classes is not None and v >= len(classes)):
                allowed = f"0..{len(classes) - 1}" if classes is not None else ">= 0"
                raise DatasetError(f"{what} line {line}: label {v}: allowed: {allowed}")
        count = len(classes) if classes is not None else max(labels, default=-1) + 1
        names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(count)]
        return labels, names
    names = [str(c) for c in classes] if classes is not None else sorted({lab for _, lab in raw})
    index = {c: i for i, c in enumerate(names)}
    labels = []
    for line, lab in raw:
        if lab not in index:
            raise DatasetError(f"{what} line {line}: label {lab!r} is not one of the {len(names)} known classes")
        labels.append(index[lab])
    return labels, names


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False
