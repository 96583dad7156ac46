"""`fit`: the training loop behind every stage that trains, with online knowledge distillation.

With a teacher, the teacher runs on the same augmented batch the student sees, every step (no grad, eval
mode, same device): nothing is precomputed, so memory does not grow with augmentations or image size.
One batch is in memory at a time; per-epoch sums stay on the device and become Python floats at the end.
On CUDA: bf16 autocast (fp16 + GradScaler where bf16 is unsupported) and channels_last. Under
torch.distributed the student is wrapped in DDP. A resume state is written atomically after every epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.training.progress import EpochProgress, Log, epoch_line, no_log


@dataclass
class _Run:
    """Everything one `fit` call trains with (so the epoch function takes one argument)."""

    model: Any
    net: Any  # the model, or its DDP wrapper
    teacher: Any
    opt: Any
    sched: Any
    scaler: Any
    dev: Any
    prec: Any
    channels_last: bool
    steps: int
    temperature: float
    alpha: float
    augment: Callable[[Any], Any] | None
    distiller: Any = None
    adapters: Any = None
    history: list = field(default_factory=list)
    best: float | None = None
    best_epoch: int | None = None
    best_model: dict | None = None
    bad_epochs: int = 0


def fit(
    model: Any, train_loader: Any, *, epochs: int, lr: float, weight_decay: float = 0.0,
    teacher: Any = None, temperature: float = 4.0, alpha: float = 0.3, augment: Callable | None = None,
    features: Sequence[tuple[str, str, float]] = (), val_loader: Any = None, patience: int | None = None,
    device: Any = "auto", amp: bool = True, steps_per_epoch: int | None = None,
    resume_path: Path | None = None, resume_key: str = "", seed: int | None = 0,
    sync_batchnorm: bool = True, pct_start: float = 0.15, log: Log | None = None, tag: str = "train",
    quiet: bool = False, on_epoch_end: Callable[[int, dict], None] | None = None,
) -> dict[str, Any]:
    """Train `model` in place: AdamW + one-cycle, KD from `teacher` when given, else CE on labeled images.

    Args:
        model: the student nn.Module. Trained in place; put back on its device, contiguous, at the end.
        train_loader: iterable of `(x, y, has_label)` or `(x, y)` batches (y = -1: unlabeled); e.g. `make_loader`.
        epochs, lr, weight_decay: the budget and optimiser (AdamW, OneCycleLR peaking at `lr`).
        teacher: nn.Module, or None for plain supervised training. Moved to the device, eval mode, no grad.
        temperature, alpha: KD temperature T and label-loss weight (see `training.kd.kd_loss`).
        augment: callable on a device batch x -> x, applied before both models (e.g. `ShiftAugment`).
        features: hint pairs `(student_layer, teacher_layer, weight)` (needs a teacher); 1x1 adapters are
            trained alongside and are not part of the student.
        val_loader: batches to measure top-1 accuracy on after every epoch.
        patience: stop after this many epochs without a better val accuracy, and restore the best weights
            (they are restored at the end in any case when patience is set). Needs val_loader.
        device: "auto" (CUDA when present), "cpu", "cuda", "cuda:N" or a torch.device.
        amp: mixed precision on CUDA (bf16, else fp16 with GradScaler); CPU is always fp32.
        steps_per_epoch: batches per epoch when the loader has no len() (also caps longer loaders).
        resume_path: the resume state file, rewritten atomically after every epoch (None: no resume state).
        resume_key: written into the state; a file with another key is ignored and overwritten.
        seed: seeds torch, numpy's global RNG and Python's `random` at the start (the same on every rank;
            the resume state carries all three); None leaves them alone.
        sync_batchnorm: under torch.distributed on CUDA, SyncBatchNorm while training.
        pct_start: fraction of steps spent warming the learning rate up.
        log: callback for the per-epoch and resume lines (rank 0 only).
        tag: prefix of log lines.
        quiet: no progress bar.
        on_epoch_end: called as `on_epoch_end(epoch, record)` on every rank after each epoch's state is written.
    Returns:
        Stats: epochs, epochs_planned, final_loss, val_accuracy, best_val_accuracy, best_epoch,
        stopped_early_at, resumed_at_epoch, device, precision, threads, channels_last, world_size,
        images_per_s, seconds, resume_writes, history (one dict per epoch).
    Raises:
        ValueError: an argument out of range. UserError: a device that is not available.
    """
    import torch

    from pipeline.training.batches import loader_length
    from pipeline.training.device import choose_precision, use_channels_last
    from pipeline.training.dist import convert_sync_batchnorm, rank_and_world, revert_sync_batchnorm
    from pipeline.training.eval import module_device

    _validate(epochs, lr, weight_decay, temperature, alpha, patience, val_loader, features, teacher)
    rank, world = rank_and_world()
    say = (log or no_log) if rank == 0 else no_log
    dev = _device_for(device)
    steps = loader_length(train_loader, steps_per_epoch)
    if seed is not None:
        _seed_all(seed)
    prec, cl = choose_precision(dev, amp), use_channels_last(dev)
    home, t_home = module_device(model), module_device(teacher) if teacher is not None else None
    sync_bn, run = {}, None
    try:
        model.to(dev)
        if teacher is not None:
            teacher.to(dev).eval()
        if cl:
            model.to(memory_format=torch.channels_last)
            if teacher is not None:
                teacher.to(memory_format=torch.channels_last)
        if world > 1 and dev.type == "cuda" and sync_batchnorm:
            sync_bn = convert_sync_batchnorm(model)
        run = _setup(model, teacher, train_loader, features, dev, prec, cl, steps, epochs, lr, weight_decay,
                     pct_start, temperature, alpha, augment)
        return _train(run, train_loader, val_loader, epochs, patience, resume_path, resume_key, say, tag,
                      quiet, on_epoch_end, rank, world, sync_batchnorm)
    finally:
        if run is not None and run.distiller is not None:
            run.distiller.remove()
        if sync_bn:
            revert_sync_batchnorm(model, sync_bn)
        model.to(home, memory_format=torch.contiguous_format) if cl else model.to(home)
        if teacher is not None:
            teacher.to(t_home, memory_format=torch.contiguous_format) if cl else teacher.to(t_home)


def _validate(epochs, lr, weight_decay, temperature, alpha, patience, val_loader, features, teacher) -> None:
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs {epochs!r}: must be an integer >= 1")
    if not lr > 0:
        raise ValueError(f"lr {lr!r}: must be > 0")
    if weight_decay < 0:
        raise ValueError(f"weight_decay {weight_decay!r}: must be >= 0")
    if not temperature > 0:
        raise ValueError(f"temperature {temperature!r}: must be > 0")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha {alpha!r}: must be in [0, 1]")
    if patience is not None and (not isinstance(patience, int) or patience < 1 or val_loader is None):
        raise ValueError(f"patience {patience!r}: must be an integer >= 1, with a val_loader to measure")
    if features and teacher is None:
        raise ValueError(f"features {list(features)!r}: feature distillation needs a teacher")


def _seed_all(seed: int) -> None:
    import random

    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # numpy is optional on a bare GPU box
        return
    np.random.seed(seed)


def _device_for(device: Any) -> Any:
    """A concrete device: "cuda" becomes the current GPU (torchrun's LOCAL_RANK after set_device)."""
    import torch

    from pipeline.training.eval import as_device

    dev = as_device(device)
    return torch.device("cuda", torch.cuda.current_device()) if dev.type == "cuda" and dev.index is None else dev


def _setup(model, teacher, loader, features, dev, prec, cl, steps, epochs, lr, wd, pct_start, temperature,
           alpha, augment) -> _Run:
    import torch

    from pipeline.training.dist import sync_module

    distiller = adapters = None
    if features:
        distiller, adapters = _make_adapters(model, teacher, loader, features, dev, cl)
        sync_module(adapters)  # DDP manages the student only: every rank starts from rank 0's adapters
    params = list(model.parameters()) + (list(adapters.parameters()) if adapters is not None else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps, pct_start=pct_start)
    scaler = torch.amp.GradScaler("cuda") if prec.needs_scaler else None
    return _Run(model, model, teacher, opt, sched, scaler, dev, prec, cl, steps, temperature, alpha, augment,
                distiller, adapters)


def _make_adapters(model, teacher, loader, features, dev, cl):
    """Hook the layers and size the adapters from one probe batch, without moving any RNG."""
    import torch

    from pipeline.training.batches import unpack_batch
    from pipeline.training.device import to_device
    from pipeline.training.kd import FeatureDistiller
    from pipeline.training.resume import rng_state, set_rng_state

    distiller = FeatureDistiller(model, teacher, features)
    saved = rng_state()  # the probe's loader draw and the adapters' init must not shift the training RNG
    try:
        x = unpack_batch(next(iter(loader)))[0][:2]
        adapters = distiller.build(model, teacher, to_device(x, dev, cl), dev)
        if cl:
            adapters.to(memory_format=torch.channels_last)
    except BaseException:
        distiller.remove()  # fit's cleanup never sees this distiller: take the hooks off here
        raise
    finally:
        set_rng_state(saved)
    return distiller, adapters


def _train(run: _Run, loader, val_loader, epochs, patience, resume_path, key, say, tag, quiet, on_epoch_end,
           rank, world, sync_batchnorm) -> dict:
    import torch

    from pipeline.training.dist import barrier, set_epoch
    from pipeline.training.epoch import run_epoch as _epoch
    from pipeline.training.eval import evaluate_loader
    from pipeline.training.resume import save_atomic
    from pipeline.training.state import make_state, resume_from

    start, done, resumed_at = resume_from(run, resume_path, key, epochs, say, tag)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        run.net = DDP(run.model, device_ids=[run.dev.index] if run.dev.type == "cuda" else None)
    progress = EpochProgress(tag, epochs, run.steps, enabled=not quiet and rank == 0)
    stopped, writes, t_all = None, 0, time.perf_counter()
    try:
        for ep in range(start, epochs if not done else start):
            set_epoch(loader, ep)
            loss, hint, ips, secs = _epoch(run, loader, progress, ep)
            amp = run.prec.dtype is not None
            val_acc = evaluate_loader(run.model, val_loader, run.dev, amp) if val_loader is not None else None
            if val_acc is not None and (run.best is None or val_acc > run.best):
                run.best, run.best_epoch, run.bad_epochs = val_acc, ep + 1, 0
                run.best_model = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
            elif val_acc is not None:
                run.bad_epochs += 1
            record = {"epoch": ep + 1, "loss": loss, "feature_loss": hint, "val_accuracy": val_acc,
                      "images_per_s": ips, "seconds": secs, "lr": float(run.sched.get_last_lr()[0])}
            run.history.append(record)
            say(epoch_line(tag, ep + 1, epochs, loss, val_acc, ips, hint))
            stop = patience is not None and run.bad_epochs >= patience and ep + 1 < epochs
            last = stop or ep + 1 == epochs
            if last and patience is not None and run.best_model is not None:
                run.model.load_state_dict(run.best_model)
            if resume_path is not None:
                if rank == 0:
                    save_atomic(make_state(run, key, ep + 1, epochs, last, stop), Path(resume_path))
                    writes += 1
                barrier()  # no rank runs ahead of the state on disk
            if on_epoch_end is not None:
                on_epoch_end(ep + 1, record)
            if stop:
                stopped = ep + 1
                say(f"[{tag}] stopped early at epoch {ep + 1}/{epochs}: no better val_acc for {patience} epochs; "
                    f"restored epoch {run.best_epoch} (val_acc {run.best * 100:.1f}%)")
                break
    finally:
        progress.close()
    this_call = [h for h in run.history if h["epoch"] > start]
    last_rec = run.history[-1] if run.history else {}
    return {
        "epochs": last_rec.get("epoch", 0), "epochs_planned": epochs, "final_loss": last_rec.get("loss"),
        "val_accuracy": run.best if patience is not None and run.best is not None else last_rec.get("val_accuracy"),
        "best_val_accuracy": run.best, "best_epoch": run.best_epoch,
        "stopped_early_at": stopped if stopped is not None else (done or {}).get("stopped_early_at"),
        "resumed_at_epoch": resumed_at, "device": str(run.dev), "precision": run.prec.name,
        "threads": torch.get_num_threads(), "channels_last": run.channels_last, "world_size": world,
        "sync_batchnorm": bool(world > 1 and run.dev.type == "cuda" and sync_batchnorm),
        "images_per_s": (sum(h["images_per_s"] * h["seconds"] for h in this_call)
                         / max(1e-9, sum(h["seconds"] for h in this_call))) if this_call else None,
        "seconds": round(time.perf_counter() - t_all, 3), "resume_writes": writes, "history": run.history,
    }
