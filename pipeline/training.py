"""Training loops shared by the stages: supervised training, Hinton KD, evaluation.

KD loss (Hinton et al., 2015): (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T)) + alpha * CE(s, y),
where the CE term only covers labeled images; unlabeled images learn from the teacher alone.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

Log = Callable[[str], None]


def _batches(n: int, batch_size: int, rng: np.random.Generator, shuffle: bool = True):
    order = rng.permutation(n) if shuffle else np.arange(n)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]


def predict_logits(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run `model` in eval mode over `x` and return logits as a numpy array."""
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(model(torch.from_numpy(x[i : i + batch_size])).float().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy in [0, 1]."""
    return float((logits.argmax(1) == y).mean()) if len(y) else 0.0


def evaluate(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a torch model on (x, y)."""
    return accuracy(predict_logits(model, x), y)


def train(
    model: Any,
    x: np.ndarray,
    y: Optional[np.ndarray],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    teacher_logits: Optional[np.ndarray] = None,
    temperature: float = 4.0,
    alpha: float = 1.0,
    labeled_mask: Optional[np.ndarray] = None,
    val: Optional[tuple[np.ndarray, np.ndarray]] = None,
    log: Optional[Log] = None,
    tag: str = "train",
) -> dict[str, Any]:
    """Train `model` in place with AdamW and a cosine schedule.

    Args:
        model: the nn.Module to train.
        x: images (N, C, H, W) float32.
        y: labels (N,) int64, or None when there are none.
        epochs, batch_size, lr, weight_decay, seed: the budget and optimiser.
        teacher_logits: (N, K) teacher logits for KD; None trains on labels alone.
        temperature: KD temperature T.
        alpha: weight of the label loss in KD (ignored without teacher_logits).
        labeled_mask: (N,) bool: which images' labels may be used; None = all (when y is given).
        val: (x, y) evaluated at the end of each epoch for the log.
        log: progress callback.
        tag: prefix of progress lines.
    Returns:
        {"epochs", "final_loss", "val_accuracy"} for the record.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(x)
    mask = np.ones(n, bool) if labeled_mask is None else labeled_mask.astype(bool)
    if y is None:
        mask = np.zeros(n, bool)
    if teacher_logits is None:
        # Supervised only: train on the labeled subset.
        keep = np.flatnonzero(mask)
        x, y, mask = x[keep], y[keep], mask[keep]
        n = len(x)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * max(1, -(-n // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y if y is not None else np.zeros(n, np.int64))
    mt = torch.from_numpy(mask)
    tt = torch.from_numpy(teacher_logits.astype(np.float32)) if teacher_logits is not None else None
    val_acc, loss_v = None, float("nan")
    for ep in range(epochs):
        model.train()
        total, count = 0.0, 0
        for idx in _batches(n, batch_size, rng):
            if len(idx) < 2:  # BatchNorm cannot train on a single image
                continue
            idx_t = torch.from_numpy(idx)
            xb = _augment(xt[idx_t], rng)
            out = model(xb)
            loss = _loss(out, yt[idx_t], mt[idx_t], None if tt is None else tt[idx_t], temperature, alpha, F)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        loss_v = total / max(1, count)
        if val is not None and (ep == epochs - 1 or log is not None):
            val_acc = evaluate(model, *val)
        if log:
            extra = f" val_acc {val_acc * 100:.1f}%" if val_acc is not None else ""
            log(f"[{tag}] epoch {ep + 1}/{epochs} loss {loss_v:.4f}{extra}")
    return {"epochs": epochs, "final_loss": loss_v, "val_accuracy": val_acc}


def _augment(xb: Any, rng: np.random.Generator) -> Any:
    """Random shifts of up to 1/8 of the image size (zero-padded): cheap and label-preserving."""
    import torch

    h = xb.shape[-1]
    pad = max(1, h // 8)
    dx, dy = (int(v) for v in rng.integers(-pad, pad + 1, size=2))
    if dx == 0 and dy == 0:
        return xb
    bg = xb.amin(dim=(1, 2, 3), keepdim=True)  # background level after normalisation
    out = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
    if dy > 0:
        out[:, :, :dy] = bg
    elif dy < 0:
        out[:, :, dy:] = bg
    if dx > 0:
        out[:, :, :, :dx] = bg
    elif dx < 0:
        out[:, :, :, dx:] = bg
    return out


def _loss(out, y, mask, teacher, temperature, alpha, F):
    if teacher is None:
        return F.cross_entropy(out, y)
    t = temperature
    kd = F.kl_div(F.log_softmax(out / t, 1), F.softmax(teacher / t, 1), reduction="batchmean") * (t * t)
    if alpha == 0 or not bool(mask.any()):
        return kd  # unlabeled batch: the teacher's soft labels alone
    ce = F.cross_entropy(out[mask], y[mask])
    return (1 - alpha) * kd + alpha * ce
