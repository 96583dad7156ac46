"""A run folder's mechanics: stage scratch folders swapped in on success, cache records, the manifest.

Each stage works in a scratch folder (`DIR/.work/<stage>`, wiped when the stage starts); only when it
succeeds is its record written and the folder swapped in as `DIR/<stage>`. A failed or interrupted stage
therefore leaves every earlier result, and its own previous result, untouched. The per-stage commands
(`edgepipe export|quantize|build`) run one stage the same way through `run_single_stage`.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import ranks
from pipeline.cache import keep, load_record, restore, save_record, tool_versions
from pipeline.errors import UserError
from pipeline.fileio import sha256_file, write_bytes, write_json
from pipeline.stages import STAGES, StageEntry
from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.fitting import clear_resume
from pipeline.version import __version__


def make_logger(quiet: bool) -> Callable[..., None]:
    """A progress printer on stderr: `log(msg)` prints text as is; `log(msg, markup=True)` styles it."""
    if quiet:
        return lambda msg, markup=False: None
    try:
        from rich.console import Console
        from rich.markup import escape

        console = Console(stderr=True, highlight=False)

        def log(msg: str, markup: bool = False) -> None:
            console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg if markup else escape(msg)}", soft_wrap=True)

        return log
    except ImportError:  # pragma: no cover
        return lambda msg, markup=False: print(msg, file=sys.stderr, flush=True)


def make_folder(path: Any, flag: str) -> Path:
    """Create the folder `path` (and its parents) for a command-line option.

    Args:
        path: the folder.
        flag: the option that named it, for the message (e.g. "--out").
    Returns:
        The folder.
    Raises:
        UserError: `path`, or a folder above it, is a file.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p} is a file; give a folder (new, or an earlier run's)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{flag} {p}: a part of this path is a file, not a folder") from None
    return p


def cached_artifact(entry: StageEntry, key: str, stage_dir: Path, work: Path, store: Path) -> Artifact | None:
    """The stage's artifact from its run folder or the shared store when its key matches, else None."""
    rec = load_record(stage_dir, key)
    if rec is None and restore(store, key, work):
        _swap_in(work, stage_dir)  # finished by a sibling run folder with the same inputs
        rec = load_record(stage_dir, key)
    if rec is None:
        return None
    try:
        metrics = entry.metrics.from_dict(rec["metrics"])
    except (TypeError, KeyError, ValueError):  # recorded by another edgepipe version: redo the stage
        return None
    return Artifact({r: stage_dir / f["path"] for r, f in rec["files"].items()}, rec["primary"], metrics,
                    rec["status"])


def run_stage(entry: StageEntry, inputs: StageInputs, section: Any, key: str, out: Path,
               store: Path) -> tuple[Artifact, float]:
    """Run one stage in its scratch folder, record it, swap it in and keep it in the store."""
    work, stage_dir = out / ".work" / entry.name, out / entry.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        art = entry.load()(inputs, section, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    files = {r: Path(p) for r, p in art.files.items()}
    save_record(work, key, files, art.primary, art.metrics.to_dict(), art.status, seconds)
    _swap_in(work, stage_dir)
    clear_resume(out, entry.name)  # its training calls' resume states (DIR/.resume/<stage>) are done with
    keep(store, key, stage_dir)
    art = Artifact({r: stage_dir / p.relative_to(work) for r, p in files.items()}, art.primary, art.metrics, art.status)
    return art, seconds


def run_worker_stage(entry: StageEntry, inputs: StageInputs, section: Any, key: str, out: Path, store: Path,
                      rank: int) -> tuple[Artifact, float]:
    """A rank other than 0 trains alongside rank 0 in a private folder, then takes rank 0's recorded artifact."""
    work = ranks.scratch(out / ".work" / entry.name, rank)
    t0 = time.perf_counter()
    try:
        entry.load()(inputs, section, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ranks.wait_for_all()  # rank 0 has written the stage's record
    art = cached_artifact(entry, key, out / entry.name, out / ".work" / entry.name, store)
    if art is None:
        raise RuntimeError(f"rank {rank}: rank 0 left no record for stage {entry.name} in {out / entry.name}; "
                           "the run folder must be on a filesystem every rank shares")
    return art, time.perf_counter() - t0


def _swap_in(work: Path, stage_dir: Path) -> None:
    old = work.parent / f"{stage_dir.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if stage_dir.exists():
        stage_dir.rename(old)
    work.rename(stage_dir)
    shutil.rmtree(old, ignore_errors=True)


def manifest_stage(name: str, status: str, seconds: float, art: Artifact, out: Path,
                    came_from: dict | None = None) -> dict:
    rec = {"name": name, "status": status if status != "done" or art.status == "done" else art.status,
           "seconds": round(seconds, 3),
           "artifact": {"path": str(art.path.relative_to(out)), "sha256": sha256_file(art.path)},
           "files": {r: str(p.relative_to(out)) for r, p in art.files.items()},
           "metrics": art.metrics.to_dict()}
    if came_from:  # inputs taken from an earlier artifact because their own stage was skipped
        rec["inputs_from"] = dict(came_from)
    return rec


def write_manifest(out, tgt, cfg, config_path, records, versions, final, failed=None) -> dict:
    manifest = {
        "edgepipe_version": __version__, "target": tgt.name, "target_alias": tgt.alias, "config": str(config_path),
        "name": cfg.name,
        "complete": final is not None, "failed_stage": failed, "stages": records, "final": final,
        "versions": {**versions, "python": sys.version.split()[0]},
    }
    if final is not None and (out / "report" / "report.md").exists():
        for name in ("report.md", "report.png"):  # the report beside the manifest, written atomically too
            write_bytes(out / name, (out / "report" / name).read_bytes())
    write_json(out / "manifest.json", manifest)
    return manifest


def run_single_stage(name: str, inputs: StageInputs, section: Any, out: Path, info: dict) -> dict:
    """Run one stage on files for `edgepipe export|quantize|build`: its files land in `out`, beside a
    `manifest.json` holding the same stage record a pipeline run writes.

    The stage works in `out/.work/<name>` and its files are moved into `out` only when it succeeds, so a failed
    command leaves an earlier result in `out` as it was (the manifest then says which stage failed).

    Args:
        name: the stage's name in the registry.
        inputs: its `StageInputs` (artifacts standing in for its `needs`).
        section: its config section (None for build).
        out: the output folder (created by the caller).
        info: what the command was given (model, data, ...), recorded in the manifest.
    Returns:
        The manifest.
    """
    entry = next(e for e in STAGES if e.name == name)
    work = out / ".work" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    head = {"edgepipe_version": __version__, "command": name, "target": inputs.target.name,
            "target_alias": inputs.target.alias, **info}
    versions = {**tool_versions(), "python": sys.version.split()[0]}
    t0 = time.perf_counter()
    try:
        art = entry.load()(inputs, section, work)
    except BaseException:
        shutil.rmtree(out / ".work", ignore_errors=True)
        write_json(out / "manifest.json", {**head, "complete": False, "failed_stage": name, "stages": [],
                                           "final": None, "versions": versions})
        raise
    finally:
        seconds = time.perf_counter() - t0
    files = {}
    for role, p in art.files.items():
        dest = out / Path(p).relative_to(work)
        dest.parent.mkdir(parents=True, exist_ok=True)
        Path(p).replace(dest)
        files[role] = dest
    shutil.rmtree(out / ".work", ignore_errors=True)
    art = Artifact(files, art.primary, art.metrics, art.status)
    rec = manifest_stage(name, art.status, seconds, art, out)
    manifest = {**head, "complete": True, "failed_stage": None, "stages": [rec],
                "final": {"path": rec["artifact"]["path"], "sha256": rec["artifact"]["sha256"]},
                "versions": versions}
    write_json(out / "manifest.json", manifest)
    return manifest


__all__ = ["cached_artifact", "make_folder", "make_logger", "manifest_stage", "run_single_stage",
           "run_stage", "run_worker_stage", "write_manifest"]
