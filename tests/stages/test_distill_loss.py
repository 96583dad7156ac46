"""The KD loss is Hinton's: T^2-scaled KL on softened logits plus alpha-weighted CE on labels."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.stages.common import labeled_subset
from pipeline.training import _loss


def test_kd_loss_matches_formula():
    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    mask = torch.ones(8, dtype=torch.bool)
    T, alpha = 3.0, 0.25
    got = _loss(s, y, mask, t, T, alpha, F)
    ps, pt = F.log_softmax(s / T, 1), F.softmax(t / T, 1)
    kl = (pt * (pt.log() - ps)).sum(1).mean()
    want = (1 - alpha) * T * T * kl + alpha * F.cross_entropy(s, y)
    assert math.isclose(float(got), float(want), rel_tol=1e-5)


def test_unlabeled_batch_learns_from_teacher_alone():
    torch.manual_seed(1)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.zeros(4, dtype=torch.long)
    none = torch.zeros(4, dtype=torch.bool)
    got = _loss(s, y, none, t, 2.0, 0.5, F)
    kd = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean") * 4
    assert math.isclose(float(got), float(kd), rel_tol=1e-6)


def test_student_matching_teacher_has_zero_kd_loss():
    t = torch.randn(6, 4)
    no_labels = torch.zeros(6, dtype=torch.bool)
    assert float(_loss(t.clone(), torch.zeros(6, dtype=torch.long), no_labels, t, 4.0, 0.3, F)) < 1e-6


def test_labeled_subset_is_stratified_and_sized():
    y = np.repeat(np.arange(10), 50)
    mask = labeled_subset(y, np.ones(len(y), bool), 0.1, seed=0)
    assert mask.sum() == 50
    assert all(mask[y == c].sum() == 5 for c in range(10))


def test_teacher_logits_match_each_shift_the_student_sees():
    from pipeline.training import shift_images, shift_set, teacher_logits_per_shift

    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
    x = np.random.default_rng(0).normal(size=(5, 1, 8, 8)).astype(np.float32)
    per_shift = teacher_logits_per_shift(teacher, x)
    shifts = shift_set(8)
    assert per_shift.shape == (len(shifts), 5, 3) and (0, 0) in shifts
    k = shifts.index((1, -1))
    with torch.no_grad():
        want = teacher(shift_images(torch.from_numpy(x), 1, -1)).numpy()
    assert np.allclose(per_shift[k], want, atol=1e-6)
    assert not np.allclose(per_shift[k], per_shift[shifts.index((0, 0))])
