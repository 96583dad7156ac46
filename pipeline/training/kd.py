"""Distillation losses: Hinton KD on logits, and hint (feature) distillation through learned 1x1 adapters.

KD (Hinton et al., 2015): (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T)) + alpha * CE(s, y), the CE
over labeled images only; a batch without labels learns from the teacher alone. Hints (FitNets, Romero et
al., 2015): MSE between a 1x1-conv projection of a student layer's output and a teacher layer's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def kd_loss(student: Any, y: Any, labeled: Any, teacher: Any | None, temperature: float, alpha: float) -> Any:
    """The KD loss of one batch (or plain CE on the labeled images without a teacher).

    Written without data-dependent Python branches, so it never waits for the GPU mid-step.

    Args:
        student: student logits (N, K), float32.
        y: labels (N,) int64 (any value where unlabeled).
        labeled: (N,) bool: which labels count.
        teacher: teacher logits (N, K), float32, or None.
        temperature: T.
        alpha: weight of the label loss.
    Returns:
        A scalar tensor (zero, with a graph, for an unlabeled batch without a teacher).
    """
    import torch.nn.functional as F

    w = labeled.to(student.dtype)
    n_lab = w.sum()
    ce_each = F.cross_entropy(student, y.clamp(min=0), reduction="none")
    ce = (ce_each * w).sum() / n_lab.clamp(min=1)  # = CE over the labeled rows; 0 when there are none
    if teacher is None:
        return ce
    t = temperature
    kd = F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1), reduction="batchmean") * (t * t)
    a = alpha * (n_lab > 0).to(student.dtype)  # unlabeled batch: the teacher's soft labels alone
    return (1 - a) * kd + a * ce


class FeatureDistiller:
    """Forward hooks on named student/teacher modules, 1x1 conv adapters, and the weighted MSE between them.

    The adapters (student channels -> teacher channels) are trained with the student but are not part of
    it: they live in `self.adapters`, outside the student's state_dict.
    """

    def __init__(self, student: Any, teacher: Any, pairs: Sequence[tuple[str, str, float]]):
        """Args:
            student: the student module (not a DDP wrapper).
            teacher: the teacher module.
            pairs: (student_layer_name, teacher_layer_name, weight) triples; names as in `named_modules()`.
        Raises:
            ValueError: a malformed pair, a negative weight, or a name that is no module of its model.
        """
        self.pairs = [_check_pair(p) for p in pairs]
        s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
        self.active = False
        self._s: list[Any] = [None] * len(self.pairs)
        self._t: list[Any] = [None] * len(self.pairs)
        self._hooks = []
        for i, (s_name, t_name, _) in enumerate(self.pairs):
            for role, name, mods in (("student", s_name, s_mods), ("teacher", t_name, t_mods)):
                if name not in mods or name == "":
                    some = ", ".join(list(n for n in mods if n)[:12])
                    raise ValueError(f"features: {role} layer {name!r} is not a module of the {role}; "
                                     f"some of its modules: {some}")
            self._hooks.append(s_mods[s_name].register_forward_hook(self._saver(self._s, i)))
            self._hooks.append(t_mods[t_name].register_forward_hook(self._saver(self._t, i)))
        self.adapters = None

    def _saver(self, store: list, i: int):
        def hook(_module, _inputs, output):
            if self.active:
                store[i] = output[0] if isinstance(output, (tuple, list)) else output
        return hook

    def build(self, student: Any, teacher: Any, x: Any, device: Any) -> Any:
        """Create the adapters from one probe forward of both models on `x` (eval mode, no grad).

        Returns:
            The adapters (an `nn.ModuleList` on `device`).
        """
        import torch
        import torch.nn as nn

        was_training = student.training
        student.eval()
        self.active = True
        try:
            with torch.no_grad():
                student(x)
                teacher(x)
        finally:
            self.active = False
            student.train(was_training)
        layers = []
        for i, (s_name, t_name, _) in enumerate(self.pairs):
            s, t = _as_map(self._s[i], s_name), _as_map(self._t[i], t_name)
            layers.append(nn.Conv2d(s.shape[1], t.shape[1], 1))
        self.clear()
        self.adapters = nn.ModuleList(layers).to(device)
        return self.adapters

    def loss(self) -> Any:
        """Sum of weight * MSE(adapter(student feature), teacher feature) for the last forward; then clears."""
        import torch.nn.functional as F

        total = 0.0
        for i, (s_name, t_name, weight) in enumerate(self.pairs):
            s = self.adapters[i](_as_map(self._s[i], s_name))
            t = _as_map(self._t[i], t_name)
            size = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
            # Different resolutions: average-pool both to the smaller grid (a no-op when they match).
            s = F.adaptive_avg_pool2d(s, size) if tuple(s.shape[2:]) != size else s
            t = F.adaptive_avg_pool2d(t, size) if tuple(t.shape[2:]) != size else t
            total = total + weight * F.mse_loss(s.float(), t.float())
        self.clear()
        return total

    def clear(self) -> None:
        """Drop the captured activations (they hold the batch's autograd graph); in place: the hooks hold the lists."""
        for store in (self._s, self._t):
            store[:] = [None] * len(store)

    def remove(self) -> None:
        """Remove the hooks from both models."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self.clear()


def _check_pair(p: Any) -> tuple[str, str, float]:
    if not isinstance(p, (tuple, list)) or len(p) != 3:
        raise ValueError(f"features: {p!r} must be (student_layer_name, teacher_layer_name, weight)")
    s, t, w = p
    if not isinstance(s, str) or not isinstance(t, str):
        raise ValueError(f"features: {p!r}: layer names must be strings")
    if not isinstance(w, (int, float)) or w < 0:
        raise ValueError(f"features: {p!r}: weight {w!r} must be a number >= 0")
    return s, t, float(w)


def _as_map(v: Any, name: str) -> Any:
    """A layer output as (N, C, H, W): (N, C) becomes (N, C, 1, 1)."""
    import torch

    if v is None:
        raise ValueError(f"features: layer {name!r} did not run in the forward pass (is it used?)")
    if not isinstance(v, torch.Tensor) or v.dim() not in (2, 4):
        shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"features: layer {name!r} gives {shape}; hints need (N, C, H, W) or (N, C) outputs")
    return v[:, :, None, None] if v.dim() == 2 else v
