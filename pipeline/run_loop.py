"""The run loop: run the stages in registry order with caching, and write `manifest.json`.

How one stage runs in its scratch folder and is swapped in, and how the manifest is written, lives in
`pipeline.run_folder`; which stages are skipped and where their inputs come from, in `pipeline.stages.plan`;
who does what under torchrun, in `pipeline.ranks`. Training calls keep
per-epoch resume states in `DIR/.resume/<stage>/` (never wiped at start, named by the stage's cache key),
so rerunning an interrupted stage resumes it; they are deleted when the stage succeeds.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import ranks
from pipeline.cache import shared_store, stage_key, tool_versions
from pipeline.errors import UserError
from pipeline.fileio import atomic_path, sha256_file, write_json
from pipeline.run_folder import (
    cached_artifact,
    make_folder,
    make_logger,
    manifest_stage,
    run_single_stage,
    run_stage,
    run_worker_stage,
    write_manifest,
)
from pipeline.stages import STAGES
from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.final import final_record
from pipeline.stages.plan import make_sources, skipped_stages, stage_inputs
from pipeline.targets import Target, load_target


def run_pipeline(config_path, target: Target | str = "cpu", out_dir="runs/demo", force: bool = False,
                 quiet: bool = False, until: str | None = None) -> dict:
    """Run every stage for `target` into `out_dir`, reusing finished stages.

    Args:
        config_path: the pipeline YAML.
        target: a loaded Target, or a target name / alias from `targets/` or a target file path.
        out_dir: the run directory (created; an existing file there is a UserError).
        force: redo every stage even when its cache is valid.
        quiet: no progress output.
        until: stop after this stage (`edgepipe export --config`); the manifest then has no final model.
    Returns:
        The manifest (also written to `out_dir/manifest.json`).
    """
    from pipeline.config import load_config
    from pipeline.data import load_data

    cfg, base = load_config(config_path)
    skipped = skipped_stages(cfg)  # stages with nothing to do for this config, with the reason
    cfg = cfg.roles()  # a PyTorch `model:` is both the teacher and the student the stages read
    rank, world = ranks.start(cfg.device)  # under torchrun: training stages on every rank, the rest on rank 0
    log = make_logger(quiet or rank != 0)
    tgt = target if isinstance(target, Target) else load_target(target)
    out = make_folder(out_dir, "--out")
    log(f"[bold]edgepipe[/bold] {cfg.name} → target [bold]{tgt.name}[/bold] ({tgt.runtime}), run folder {out}",
        markup=True)
    data = _with_num_classes(load_data(cfg.data, base, cfg=cfg, cache_dir=shared_store(out)), cfg.num_classes,
                             config_path)
    _check_models_fit(cfg, data, base)
    eval_info = _save_eval_data(out, data, cfg.seed) if rank == 0 else {}
    sources = make_sources(cfg, base, data, out, skipped)  # the given models, as the stages read them
    versions = tool_versions()
    common = {"data": data.digest(), "seed": cfg.seed, "teacher": _model_id(cfg.teacher, base), "versions": versions}
    student_id = _model_id(cfg.student, base)
    artifacts: dict[str, Artifact] = {}
    records: list[dict] = []
    store = shared_store(out)
    total0 = time.perf_counter()
    for entry in STAGES[: [e.name for e in STAGES].index(until) + 1] if until else STAGES:
        if world > 1 and not entry.trains:  # the training is over: every later stage runs once, on rank 0
            ranks.leave()
            if rank != 0:
                return ranks.worker_result(rank, world)
            world = 1
        if entry.name in skipped:
            records.append({"name": entry.name, "status": "skipped", "seconds": 0.0, "reason": skipped[entry.name],
                            "artifact": None, "files": {}, "metrics": {}})
            log(f"[dim]– {entry.name}: skipped ({skipped[entry.name]})[/dim]", markup=True)
            continue
        needed, came_from = stage_inputs(entry.needs, {**sources, **artifacts}, skipped)
        section = getattr(cfg, entry.config_key) if entry.config_key else None
        key = stage_key({
            "stage": entry.name, **common,
            "student": student_id if entry.uses_student else None,
            "config": section.model_dump() if section is not None else None,
            "extra": {k: getattr(cfg, k).model_dump() for k in entry.extra_config},
            "inputs": {n: {r: sha256_file(p) for r, p in a.files.items()} for n, a in needed.items()},
            "target": tgt.model_dump() if entry.uses_target else entry.target_facts(tgt, section),
            "environment": entry.environment_facts(tgt),
        })
        stage_dir = out / entry.name
        work = out / ".work" / entry.name
        art = None if force or rank != 0 else cached_artifact(entry, key, stage_dir, work, store)
        if world > 1 and ranks.agree(art is not None) and rank != 0:
            art = cached_artifact(entry, key, stage_dir, work, store)  # rank 0 found (or restored) it
        if art is not None:
            artifacts[entry.name] = art
            records.append(manifest_stage(entry.name, "cached", 0.0, art, out, came_from))
            log(f"[green]✓[/green] {entry.name}: cached", markup=True)
            continue
        log(f"[bold cyan]▶ {entry.name}[/bold cyan]: {entry.description}", markup=True)
        inputs = StageInputs(needed, cfg, tgt, data, base, out, log, cache_key=key)
        if rank != 0:
            art, seconds = run_worker_stage(entry, inputs, section, key, out, store, rank)
            artifacts[entry.name] = art
            continue
        try:
            art, seconds = run_stage(entry, inputs, section, key, out, store)
        except BaseException:
            write_manifest(out, tgt, cfg, config_path, records, versions, None, failed=entry.name)
            raise
        if world > 1:
            ranks.wait_for_all()  # the others read this stage's record now
        artifacts[entry.name] = art
        records.append(manifest_stage(entry.name, art.status, seconds, art, out, came_from))
        log(f"[green]✓[/green] {entry.name}: {art.status} in {seconds:.1f} s", markup=True)
    shutil.rmtree(out / ".work", ignore_errors=True)
    if until:  # a partial run: recorded as such, so deploy refuses to bundle it
        manifest = write_manifest(out, tgt, cfg, config_path, records, versions, None)
        manifest["stopped_after"] = until
        write_json(out / "manifest.json", manifest)
        return manifest
    final = final_record({**sources, **artifacts}, out, data, tgt, eval_info)
    manifest = write_manifest(out, tgt, cfg, config_path, records, versions, final)
    manifest["pipeline_seconds"] = round(time.perf_counter() - total0, 2)
    acc = "—" if final["accuracy"] is None else f"{final['accuracy'] * 100:.2f}%"
    log(f"[bold green]done[/bold green] in {manifest['pipeline_seconds']:.1f} s: final accuracy "
        f"{acc}, p50 {final['latency_ms']['p50']:.3f} ms → {out / 'manifest.json'}",
        markup=True)
    return manifest


def _model_id(spec: Any, base: Path) -> dict | None:
    """What identifies a model definition: its config, and a user factory's source file hash (None: no model)."""
    if spec is None:
        return None
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
    """Fail early, with a clear message, when the data's images do not fit the models.

    With `eval:` (a user's evaluation), a model may return several outputs: only the forward pass is checked.
    """
    import torch

    from pipeline.models import build_model

    if getattr(cfg, "model", None) is not None:  # one given model (both roles); an ONNX one is checked at quantize
        roles = [] if getattr(cfg, "onnx_source", None) else [("model", cfg.model)]
    else:
        roles = [(role, getattr(cfg, role)) for role in ("teacher", "student")]
    for role, spec in roles:
        model = build_model(spec, data.num_classes, data.input_shape[0], base, role).eval()
        try:
            with torch.no_grad():
                out = model(torch.from_numpy(data.sample("train", 2)[0]))
        except Exception as e:
            raise UserError(
                f"data: images of shape {list(data.input_shape)} (C, H, W) do not fit the {role} model: "
                f"{str(e).splitlines()[0]}"
            ) from None
        if getattr(cfg, "eval", None):  # the user's eval reads the outputs, whatever their form
            continue
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


__all__ = ["make_folder", "run_pipeline", "run_single_stage"]
