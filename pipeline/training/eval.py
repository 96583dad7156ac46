"""Evaluation over loaders: top-1 accuracy and logits, one batch in memory at a time, AMP on CUDA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def as_device(device: Any) -> Any:
    """A torch.device from a device string (see `resolve_device`) or a torch.device."""
    import torch

    from pipeline.training.device import resolve_device

    return device if isinstance(device, torch.device) else resolve_device(device)


def module_device(module: Any) -> Any:
    """The device of a module's first parameter or buffer (CPU for a module without any)."""
    import torch

    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def on_device(module: Any, device: Any) -> Iterator[Any]:
    """Run with `module` on `device` in eval mode; put it back where, and in the mode, it was."""
    home, was_training = module_device(module), module.training
    moved = home != device
    if moved:
        module.to(device)
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
        if moved:
            module.to(home)


def evaluate_loader(model: Any, loader: Any, device: Any = "auto", amp: bool = True) -> float:
    """Top-1 accuracy of `model` over the labeled images of `loader`.

    Counts stay on the device until the end (no per-batch GPU sync); under torch.distributed the counts
    are summed over ranks, so every rank returns the same number whether the loader is sharded or not.

    Args:
        model: the nn.Module (not a DDP wrapper).
        loader: iterable of `(x, y[, has_label])` batches; y < 0 or has_label False are not counted.
        device: "auto", "cpu", "cuda", "cuda:N" or a torch.device.
        amp: autocast on CUDA (bf16 where supported, else fp16).
    Returns:
        Accuracy in [0, 1] (0.0 when no image is labeled).
    """
    import torch

    from pipeline.training.batches import unpack_batch
    from pipeline.training.device import autocast, choose_precision, to_device, use_channels_last
    from pipeline.training.dist import all_reduce_sum

    dev = as_device(device)
    prec, cl = choose_precision(dev, amp), use_channels_last(dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    total = torch.zeros((), dtype=torch.int64, device=dev)
    with on_device(model, dev), torch.no_grad():
        for batch in loader:
            x, y, labeled = unpack_batch(batch)
            with autocast(dev, prec):
                out = model(to_device(x, dev, cl))
            y, labeled = y.to(dev, non_blocking=True), labeled.to(dev, non_blocking=True)
            correct += ((out.argmax(1) == y) & labeled).sum()
            total += labeled.sum()
    c, n = all_reduce_sum([float(correct), float(total)], dev)
    return c / n if n else 0.0


def predict_logits_loader(model: Any, loader: Any, device: Any = "auto", amp: bool = True) -> Any:
    """Logits of `model` for every image of `loader`, in loader order, as a float32 numpy array (N, K).

    Each batch's logits go to host memory as they come; the result itself is N x K (the caller asked for
    all of it). Under torch.distributed each rank returns its own shard's logits.

    Args:
        model: the nn.Module.
        loader: iterable of batches (`x`, or tuples whose first element is x).
        device: "auto", "cpu", "cuda", "cuda:N" or a torch.device.
        amp: autocast on CUDA.
    Returns:
        numpy array (N, K), float32; (0, 0) for an empty loader.
    """
    import numpy as np
    import torch

    from pipeline.training.batches import unpack_batch
    from pipeline.training.device import autocast, choose_precision, to_device, use_channels_last

    dev = as_device(device)
    prec, cl = choose_precision(dev, amp), use_channels_last(dev)
    outs = []
    with on_device(model, dev), torch.no_grad():
        for batch in loader:
            x = unpack_batch(batch)[0]
            with autocast(dev, prec):
                out = model(to_device(x, dev, cl))
            outs.append(out.float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
