"""Stage cache: a stage is reused when its key matches and its files still hash as recorded.

Key = sha256 of the stage's config section (and any section it also reads), the sha256 of every
upstream artifact file, the data's digest, the model definitions (including a user factory's source
file), the target where the stage depends on it, and the versions of the tools that shape results.
Each finished stage folder holds `stage.json` (key, files with sha256, metrics), written last, so a
stage killed mid-way is never trusted. Finished stages are also kept by key in a store shared by
sibling run folders, so `runs/jetson` reuses the training that `runs/cpu` already did.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.fileio import sha256_file, sha256_text, write_json

RECORD = "stage.json"
TOOLS = ("edgepipe", "torch", "onnx", "onnxruntime", "torch-pruning", "onnxslim", "numpy", "scikit-learn")


def tool_versions() -> dict[str, str]:
    """Installed versions of the tools whose behaviour changes results."""
    out = {}
    for name in TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def stage_key(parts: dict[str, Any]) -> str:
    """sha256 of a canonical JSON of everything a stage's output depends on."""
    return sha256_text(json.dumps(parts, sort_keys=True, default=str))


def load_record(stage_dir: Path, key: str) -> dict | None:
    """The stage's record if its key matches and every file is present with its recorded sha256."""
    rec_path = stage_dir / RECORD
    if not rec_path.is_file():
        return None
    try:
        rec = json.loads(rec_path.read_text())
    except (json.JSONDecodeError, OSError):
        return None
    if rec.get("key") != key:
        return None
    for f in rec.get("files", {}).values():
        p = stage_dir / f["path"]
        if not p.is_file() or sha256_file(p) != f["sha256"]:
            return None
    return rec


def save_record(stage_dir: Path, key: str, files: dict[str, Path], primary: str, metrics: dict, status: str,
                seconds: float) -> dict:
    """Hash the stage's files and write its record (last, atomically)."""
    rec = {
        "key": key, "primary": primary, "status": status, "seconds": round(seconds, 3), "metrics": metrics,
        "files": {role: {"path": str(p.relative_to(stage_dir)), "sha256": sha256_file(p)} for role, p in files.items()},
    }
    write_json(stage_dir / RECORD, rec)
    return rec


def shared_store(out_dir: Path) -> Path:
    """The cache shared by run folders that sit side by side (runs/cpu and runs/jetson share runs/.edgepipe-cache)."""
    return out_dir.resolve().parent / ".edgepipe-cache"


def restore(store: Path, key: str, work: Path) -> bool:
    """Copy a stage stored under `key` into the empty scratch folder `work`, if it is stored and intact."""
    import shutil

    src = store / key
    if load_record(src, key) is None:
        return False
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work)
    return load_record(work, key) is not None


def keep(store: Path, key: str, stage_dir: Path) -> None:
    """Store a finished stage folder under its key (copied to a temp name, then renamed: never half-written)."""
    import shutil

    dest = store / key
    if load_record(dest, key) is not None:
        return
    shutil.rmtree(dest, ignore_errors=True)  # absent, or damaged: replace it
    tmp = store / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(stage_dir, tmp)
    try:
        tmp.rename(dest)
    except OSError:  # another run stored it first
        shutil.rmtree(tmp, ignore_errors=True)
