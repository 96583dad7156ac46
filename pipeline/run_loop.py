"""The run loop: run the stages in registry order with caching, and write `manifest.json`.

Each stage works in a scratch folder (`DIR/.work/<stage>`, wiped when the stage starts); only when it
succeeds is its record written and the folder swapped in as `DIR/<stage>`. A failed or interrupted stage
therefore leaves every earlier result, and its own previous result, untouched. Training calls keep
per-epoch resume states in `DIR/.resume/<stage>/` (never wiped at start, named by the stage's cache key),
so rerunning an interrupted stage resumes it; they are deleted when the stage succeeds.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache import keep, load_record, restore, save_record, shared_store, stage_key, tool_versions
from pipeline.errors import UserError
from pipeline.fileio import atomic_path, sha256_file, write_bytes, write_json
from pipeline.stages import STAGES, StageEntry
from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.final import final_record
from pipeline.stages.fitting import clear_resume
from pipeline.targets import Target, load_target
from pipeline.version import __version__


def _logger(quiet: bool) -> Callable[..., None]:
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


def run_pipeline(config_path, target: Target | str = "cpu", out_dir="runs/demo", force: bool = False,
                 quiet: bool = False) -> dict:
    """Run every stage for `target` into `out_dir`, reusing finished stages.

    Args:
        config_path: the pipeline YAML.
        target: a loaded Target, or a target name / alias from `targets/` or a target file path.
        out_dir: the run directory (created; an existing file there is a UserError).
        force: redo every stage even when its cache is valid.
        quiet: no progress output.
    Returns:
        The manifest (also written to `out_dir/manifest.json`).
    """
    from pipeline.config import load_config
    from pipeline.data import load_data

    log = _logger(quiet)
    cfg, base = load_config(config_path)
    tgt = target if isinstance(target, Target) else load_target(target)
    out = make_folder(out_dir, "--out")
    log(f"[bold]edgepipe[/bold] {cfg.name} → target [bold]{tgt.name}[/bold] ({tgt.runtime}), run folder {out}",
        markup=True)
    data = _with_num_classes(load_data(cfg.data, base, cfg=cfg, cache_dir=shared_store(out)), cfg.num_classes,
                             config_path)
    _check_models_fit(cfg, data, base)
    eval_info = _save_eval_data(out, data, cfg.seed)
    versions = tool_versions()
    common = {"data": data.digest(), "seed": cfg.seed, "teacher": _model_id(cfg.teacher, base), "versions": versions}
    student_id = _model_id(cfg.student, base)
    artifacts: dict[str, Artifact] = {}
    records: list[dict] = []
    store = shared_store(out)
    total0 = time.perf_counter()
    for entry in STAGES:
        section = getattr(cfg, entry.config_key) if entry.config_key else None
        key = stage_key({
            "stage": entry.name, **common,
            "student": student_id if entry.uses_student else None,
            "config": section.model_dump() if section is not None else None,
            "extra": {k: getattr(cfg, k).model_dump() for k in entry.extra_config},
            "inputs": {n: {r: sha256_file(p) for r, p in artifacts[n].files.items()} for n in entry.needs},
            "target": tgt.model_dump() if entry.uses_target else None,
            "environment": entry.environment_facts(tgt),
        })
        stage_dir = out / entry.name
        art = None if force else _cached(entry, key, stage_dir, out / ".work" / entry.name, store)
        if art is not None:
            artifacts[entry.name] = art
            records.append(_manifest_stage(entry.name, "cached", 0.0, art, out))
            log(f"[green]✓[/green] {entry.name}: cached", markup=True)
            continue
        log(f"[bold cyan]▶ {entry.name}[/bold cyan]: {entry.description}", markup=True)
        inputs = StageInputs({n: artifacts[n] for n in entry.needs}, cfg, tgt, data, base, out, log, cache_key=key)
        try:
            art, seconds = _run_stage(entry, inputs, section, key, out, store)
        except BaseException:
            _write_manifest(out, tgt, cfg, config_path, records, versions, None, failed=entry.name)
            raise
        artifacts[entry.name] = art
        records.append(_manifest_stage(entry.name, art.status, seconds, art, out))
        log(f"[green]✓[/green] {entry.name}: {art.status} in {seconds:.1f} s", markup=True)
    shutil.rmtree(out / ".work", ignore_errors=True)
    final = final_record(artifacts, out, data, tgt, eval_info)
    manifest = _write_manifest(out, tgt, cfg, config_path, records, versions, final)
    manifest["pipeline_seconds"] = round(time.perf_counter() - total0, 2)
    log(f"[bold green]done[/bold green] in {manifest['pipeline_seconds']:.1f} s: final accuracy "
        f"{final['accuracy'] * 100:.2f}%, p50 {final['latency_ms']['p50']:.3f} ms → {out / 'manifest.json'}",
        markup=True)
    return manifest


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


def _cached(entry: StageEntry, key: str, stage_dir: Path, work: Path, store: Path) -> Artifact | None:
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


def _run_stage(entry: StageEntry, inputs: StageInputs, section: Any, key: str, out: Path,
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


def _swap_in(work: Path, stage_dir: Path) -> None:
    old = work.parent / f"{stage_dir.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if stage_dir.exists():
        stage_dir.rename(old)
    work.rename(stage_dir)
    shutil.rmtree(old, ignore_errors=True)


def _model_id(spec: Any, base: Path) -> dict:
    """What identifies a model definition: its config, and a user factory's source file hash."""
    ident = spec.model_dump()
    if getattr(spec, "weights", None):
        from pipeline.config import resolve

        ident["weights_sha256"] = sha256_file(resolve(base, spec.weights))
    if getattr(spec, "factory", None):
        mod = spec.factory.split(":")[0]
        cand = base / (mod.replace(".", "/") + ".py")
        if cand.is_file():
            ident["source_sha256"] = sha256_file(cand)
    return ident


def _with_num_classes(data: Any, num_classes: Any, config_path: Any) -> Any:
    """Apply the config's `num_classes` (e.g. classes absent from a small data set), checked against the labels."""
    if num_classes is None:
        return data
    if num_classes < data.num_classes:
        raise UserError(f"{config_path}: num_classes = {num_classes}, but the labels go up to {data.num_classes - 1} "
                        f"(allowed: num_classes >= {data.num_classes}, or leave it out)")
    return data.with_num_classes(num_classes)


def _check_models_fit(cfg: Any, data: Any, base: Path) -> None:
    """Fail early, with a clear message, when the data's images do not fit the models."""
    import torch

    from pipeline.models import build_model

    for role in ("teacher", "student"):
        model = build_model(getattr(cfg, role), data.num_classes, data.input_shape[0], base, role).eval()
        try:
            with torch.no_grad():
                out = model(torch.from_numpy(data.sample("train", 2)[0]))
        except Exception as e:
            raise UserError(
                f"data: images of shape {list(data.input_shape)} (C, H, W) do not fit the {role} model: "
                f"{str(e).splitlines()[0]}"
            ) from None
        if not isinstance(out, torch.Tensor):
            raise UserError(
                f"{role}: the model returns {type(out).__name__}, but edgepipe needs one logits tensor of shape "
                f"[N, {data.num_classes}] (wrap the model so forward returns the logits alone)"
            )
        if out.ndim != 2 or out.shape[1] != data.num_classes:
            raise UserError(
                f"{role}: the model outputs shape {list(out.shape)} but the data has {data.num_classes} classes "
                f"(expected [N, {data.num_classes}] logits)"
            )


EVAL_MAX_IMAGES, EVAL_MAX_BYTES, CALIB_IMAGES = 1000, 64 << 20, 256


def _save_eval_data(out: Path, data: Any, seed: int) -> dict:
    """Bounded samples for reruns and bundles: `data/eval.npz` (held-out, at most 1,000 images or 64 MB) and
    `data/calib.npz` (256 training images). Returns what eval.npz holds: {path, samples, of}."""
    per_image = 4 * int(np.prod(data.input_shape))
    n_eval = max(1, min(EVAL_MAX_IMAGES, EVAL_MAX_BYTES // per_image))
    x, y = data.sample("test", n_eval)
    cx, _ = data.sample("train", CALIB_IMAGES, seed=seed)
    for name, arrays in (("eval", {"x": x, "y": y}), ("calib", {"x": cx})):
        path = out / "data" / f"{name}.npz"
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return {"path": "data/eval.npz", "samples": int(len(x)), "of": data.count("test")}


def _manifest_stage(name: str, status: str, seconds: float, art: Artifact, out: Path) -> dict:
    return {"name": name, "status": status if status != "done" or art.status == "done" else art.status,
            "seconds": round(seconds, 3),
            "artifact": {"path": str(art.path.relative_to(out)), "sha256": sha256_file(art.path)},
            "files": {r: str(p.relative_to(out)) for r, p in art.files.items()},
            "metrics": art.metrics.to_dict()}


def _write_manifest(out, tgt, cfg, config_path, records, versions, final, failed=None) -> dict:
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


__all__ = ["make_folder", "run_pipeline"]
