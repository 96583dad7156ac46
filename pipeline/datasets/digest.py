"""Content digests of data files for cache keys: the files' bytes, streamed, never decoded arrays."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.datasets.base import DatasetError

CHUNK = 1 << 20  # 1 MiB: memory stays bounded whatever the file sizes


def files_digest(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> str:
    """sha256 over each file's (relative path, size, bytes), in sorted relative-path order.

    Moving the whole data folder keeps the digest; renaming, adding, removing or editing a file
    (or moving it to another class folder) changes it.

    Args:
        paths: the files.
        root: paths are recorded relative to this folder (default: their common folder).
    Returns:
        The hex digest.
    Raises:
        DatasetError: a file that is missing or unreadable, naming it.
    """
    files = [Path(p) for p in paths]
    if root is None:
        root = os.path.commonpath([str(p.parent.resolve()) for p in files]) if files else "."
    entries = sorted((_rel(p, Path(root)), p) for p in files)
    h = hashlib.sha256()
    h.update(f"edgepipe-files-v1 {len(entries)}\n".encode())
    for rel, p in entries:
        try:
            size = p.stat().st_size
            # Length-prefixed fields so no two different file lists can produce the same stream.
            name = rel.encode("utf-8")
            h.update(len(name).to_bytes(8, "little") + name + size.to_bytes(8, "little"))
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    h.update(chunk)
        except OSError as e:
            raise DatasetError(f"cannot read {p} to compute the data digest: {e.strerror or e}") from None
    return h.hexdigest()


def dataset_digest(dataset: Any) -> str:
    """Digest of a dataset from this package: its files' bytes plus its class names (label mapping).

    Args:
        dataset: an ImageFolderDataset, UnlabeledFolderDataset, ImageListDataset or NpzDataset.
    Returns:
        The hex digest.
    """
    root = getattr(dataset, "root", None)
    h = hashlib.sha256(files_digest(dataset.digest_files(), root).encode())
    classes = getattr(dataset, "classes", None)
    h.update(repr(list(classes) if classes is not None else None).encode("utf-8"))
    return h.hexdigest()


def _rel(p: Path, root: Path) -> str:
    try:
        return os.path.relpath(p.resolve(), root.resolve()).replace(os.sep, "/")
    except ValueError:  # another drive on Windows: no relative form
        return p.resolve().as_posix()
