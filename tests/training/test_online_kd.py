"""Online KD: the teacher sees the student's augmented batch every step; KD and hints learn; nothing precomputed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.datasets import ArrayDataset, make_loader
from pipeline.training import evaluate_loader, fit, kd_loss, train
from pipeline.training.batches import unpack_batch


class Recorder(nn.Module):
    """Wraps a model and records every input it sees, with its mode and whether grad was on."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.seen: list[torch.Tensor] = []
        self.modes: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        self.modes.append((self.training, torch.is_grad_enabled()))
        return self.inner(x)


def test_teacher_runs_on_the_same_augmented_batch_every_step(bars_data, make_net):
    x, y = bars_data(96, 0)
    loader = make_loader(ArrayDataset(x, y), 16, seed=0)
    calls = []

    def augment(xb):  # different every step, and far from the raw data: the models must see this output
        calls.append(1)
        return xb + 100.0 + torch.randn(()).item()

    torch.manual_seed(0)
    student, teacher = Recorder(make_net(8)), Recorder(make_net(8))
    fit(student, loader, epochs=2, lr=1e-3, teacher=teacher, augment=augment, device="cpu", quiet=True)
    steps = 2 * len(loader)
    # One teacher forward per step, on the batch the student saw (after augmentation): nothing precomputed.
    assert len(teacher.seen) == len(student.seen) == len(calls) == steps
    for s_in, t_in in zip(student.seen, teacher.seen, strict=True):
        assert torch.equal(s_in, t_in)
        assert float(t_in.min()) > 90.0
    assert len({round(float(t.mean()), 3) for t in teacher.seen}) > steps // 2
    assert all(m == (False, False) for m in teacher.modes)  # eval mode, no grad
    assert all(m == (True, True) for m in student.modes)


def test_kd_from_unlabeled_images_beats_chance_and_the_loss_falls(bars_data, make_net):
    x, y = bars_data(192, 0)
    vx, vy = bars_data(96, 1)
    val = make_loader(ArrayDataset(vx, vy), 96, shuffle=False)
    torch.manual_seed(0)
    teacher = make_net(16)
    fit(teacher, make_loader(ArrayDataset(x, y), 32, seed=0), epochs=3, lr=0.01, device="cpu", quiet=True)
    teacher_acc = evaluate_loader(teacher, val, "cpu")
    assert teacher_acc > 0.9
    torch.manual_seed(1)
    student = make_net(8)
    # No labels at all (y = -1): the student learns from the teacher's soft labels alone.
    stats = fit(student, make_loader(ArrayDataset(x), 32, seed=0), epochs=4, lr=0.01, teacher=teacher, alpha=0.5,
                val_loader=val, device="cpu", quiet=True)
    losses = [h["loss"] for h in stats["history"]]
    assert losses[-1] < losses[0] * 0.5, losses
    assert stats["val_accuracy"] > 0.8, stats["val_accuracy"]  # chance is 1/3
    assert stats["device"] == "cpu" and stats["precision"] == "fp32" and stats["threads"] == 1


def test_feature_distillation_trains_adapters_that_stay_out_of_the_student(bars_data, make_net):
    x, y = bars_data(128, 0)
    loader = make_loader(ArrayDataset(x, y), 32, seed=0)
    torch.manual_seed(0)
    teacher, student = make_net(16), make_net(8)
    keys = list(student.state_dict())
    # Student layer "0": 8 channels at 8x8; teacher layer "3": 16 channels at 4x4 (adapter + pooling).
    stats = fit(student, loader, epochs=4, lr=0.01, teacher=teacher, features=[("0", "3", 1.0)],
                device="cpu", quiet=True)
    hints = [h["feature_loss"] for h in stats["history"]]
    assert all(math.isfinite(h) for h in hints) and hints[-1] < hints[0], hints
    assert list(student.state_dict()) == keys  # no adapter weights in the saved student
    for m in list(student.modules()) + list(teacher.modules()):
        assert not m._forward_hooks  # hooks removed at the end


def test_feature_names_are_checked(bars_data, make_net):
    x, y = bars_data(32, 0)
    loader = make_loader(ArrayDataset(x, y), 16)
    with pytest.raises(ValueError, match="'nope' is not a module of the student"):
        fit(make_net(8), loader, epochs=1, lr=0.01, teacher=make_net(8), features=[("nope", "0", 1.0)], device="cpu")
    with pytest.raises(ValueError, match="needs a teacher"):
        fit(make_net(8), loader, epochs=1, lr=0.01, features=[("0", "0", 1.0)], device="cpu")


def _hinton(s, y, mask, t, temperature, alpha):
    """Hinton's KD loss written out: T^2 KL on softened logits, plus alpha CE over the labeled rows."""
    kd = F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1), reduction="batchmean")
    kd = kd * temperature * temperature
    if alpha == 0 or not bool(mask.any()):
        return kd
    return (1 - alpha) * kd + alpha * F.cross_entropy(s[mask], y[mask])


def test_kd_loss_matches_hintons_formula():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    some = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.bool)
    none = torch.zeros(8, dtype=torch.bool)
    for mask in (some, none, torch.ones(8, dtype=torch.bool)):
        assert math.isclose(float(kd_loss(s, y, mask, t, 3.0, 0.25)), float(_hinton(s, y, mask, t, 3.0, 0.25)),
                            rel_tol=1e-5)
    # Without a teacher: CE over the labeled rows only, and zero (with a graph) for an unlabeled batch.
    assert math.isclose(float(kd_loss(s, y, some, None, 3.0, 0.25)), float(F.cross_entropy(s[some], y[some])),
                        rel_tol=1e-6)
    s.requires_grad_(True)
    zero = kd_loss(s, torch.full((8,), -1), none, None, 3.0, 0.25)
    zero.backward()
    assert float(zero.detach()) == 0.0 and float(s.grad.abs().sum()) == 0.0


def test_train_on_arrays_with_a_teacher_uses_the_online_loop(bars_data, make_net):
    x, y = bars_data(96, 0)
    vx, vy = bars_data(48, 1)
    torch.manual_seed(0)
    teacher = make_net(8)
    train(teacher, x, y, epochs=2, batch_size=32, lr=0.01, weight_decay=0.0, seed=0, val=(vx, vy))
    mask = np.zeros(len(y), bool)
    mask[::10] = True
    lines: list[str] = []
    stats = train(make_net(8), x, y, epochs=2, batch_size=32, lr=0.01, weight_decay=0.0, seed=0, teacher=teacher,
                  alpha=0.3, labeled_mask=mask, val=(vx, vy), log=lines.append, tag="distill", device="cpu")
    assert stats["epochs"] == 2 and stats["val_accuracy"] is not None
    assert lines[-1].startswith("[distill] epoch 2/2 loss ") and " img/s " in lines[-1]
    with pytest.raises(TypeError, match="teacher_logits"):  # the precomputed path is gone
        train(make_net(8), x, y, epochs=1, batch_size=32, lr=0.01, weight_decay=0.0, seed=0, teacher=teacher,
              teacher_logits=np.zeros((len(x), 3), np.float32))


def test_batches_and_datasets_are_validated():
    with pytest.raises(ValueError, match="has 3 entries, x has 4 images"):
        ArrayDataset(np.zeros((4, 1, 2, 2), np.float32), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"\(x, y, has_label\), \(x, y\) or x; got a tuple of 4"):
        unpack_batch((1, 2, 3, 4))
    x, y, lab = unpack_batch((torch.zeros(3, 1), torch.tensor([0, -1, 2]), torch.tensor([True, True, False])))
    assert lab.tolist() == [True, False, False]
