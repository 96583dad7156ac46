"""Atomic file writes and hashing.

Every artifact is written to a temporary file in the same folder, flushed, fsynced and renamed
over the destination, so a killed run never leaves a half-written file that a rerun would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import UserError


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; rename it over `dest` only if the block succeeds.

    Args:
        dest: final path of the file.
    Yields:
        A path to write to (in the same folder, so the rename is atomic).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(dest: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `dest` atomically and return the path."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `dest` atomically and return the path."""
    return write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON to `dest` atomically and return the path."""
    return write_text(dest, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file, turning a missing or corrupt file into a UserError naming the path."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {p} is not valid JSON: {e}") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    """Return the hex sha256 of a string (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
