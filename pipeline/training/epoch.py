"""One training epoch of `fit`: the per-step work, with per-epoch sums kept on the device."""

from __future__ import annotations

import time
from typing import Any


def run_epoch(run: Any, loader: Any, progress: Any, ep: int) -> tuple[float, float | None, float, float]:
    """One pass over `loader`: augment, student forward, teacher forward (no grad), loss, backward, step.

    Args:
        run: the loop's `_Run` (models, optimiser, scheduler, scaler, device, precision, KD settings).
        loader: the train batches; at most `run.steps` are used.
        progress: the epoch's `EpochProgress`.
        ep: the 0-based epoch.
    Returns:
        (mean loss, mean hint loss or None, images/s over all ranks, seconds).
    """
    import torch

    from pipeline.training.batches import unpack_batch
    from pipeline.training.device import autocast, sync, to_device
    from pipeline.training.dist import all_reduce_sum, average_grads
    from pipeline.training.kd import kd_loss

    run.net.train()
    progress.start(ep + 1)
    dev, acc_dtype = run.dev, torch.float64 if run.dev.type in ("cpu", "cuda") else torch.float32
    loss_sum = torch.zeros((), dtype=acc_dtype, device=dev)  # sums stay on the device: no per-step sync
    hint_sum = torch.zeros((), dtype=acc_dtype, device=dev)
    images, t0 = 0, time.perf_counter()
    for i, batch in enumerate(loader):
        if i >= run.steps:
            break
        x, y, labeled = unpack_batch(batch)
        if len(x) < 2:  # BatchNorm cannot train on a single image
            continue
        x = to_device(x, dev, run.channels_last)
        y, labeled = y.to(dev, non_blocking=True), labeled.to(dev, non_blocking=True)
        if run.augment is not None:
            x = run.augment(x)
            x = x.contiguous(memory_format=torch.channels_last) if run.channels_last and x.dim() == 4 else x
        hint = None
        with autocast(dev, run.prec):
            if run.distiller is not None:
                run.distiller.active = True
            # The teacher first: its activations are freed before the student's are kept for backward, so
            # the two never coexist (on CPU, 35 % more images/s at 224 px: fewer fresh pages to fault in).
            t_out = None
            if run.teacher is not None:
                with torch.no_grad():
                    t_out = run.teacher(x).float()
            out = run.net(x)
            if run.distiller is not None:
                run.distiller.active = False
                hint = run.distiller.loss()
        loss = kd_loss(out.float(), y, labeled, t_out, run.temperature, run.alpha)
        if hint is not None:
            loss = loss + hint
        run.opt.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler.scale(loss).backward()
            _sync_adapters(run, average_grads)
            run.scaler.step(run.opt)
            run.scaler.update()
        else:
            loss.backward()
            _sync_adapters(run, average_grads)
            run.opt.step()
        run.sched.step()
        loss_sum += loss.detach().to(acc_dtype) * len(x)
        if hint is not None:
            hint_sum += hint.detach().to(acc_dtype) * len(x)
        images += len(x)
        progress.advance(len(x))
    sync(dev)
    secs = time.perf_counter() - t0
    total, hints, n = all_reduce_sum([float(loss_sum), float(hint_sum), float(images)], dev)
    return total / max(1.0, n), (hints / max(1.0, n) if run.distiller is not None else None), n / max(1e-9, secs), secs


def _sync_adapters(run: Any, average_grads) -> None:
    if run.adapters is not None:
        average_grads(run.adapters)
