"""The KD loss is Hinton's: T^2-scaled KL on softened logits plus alpha-weighted CE on labels."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.stages.common import labeled_subset
from pipeline.training import kd_loss


def test_kd_loss_matches_formula():
    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    mask = torch.ones(8, dtype=torch.bool)
    T, alpha = 3.0, 0.25
    got = kd_loss(s, y, mask, t, T, alpha)
    ps, pt = F.log_softmax(s / T, 1), F.softmax(t / T, 1)
    kl = (pt * (pt.log() - ps)).sum(1).mean()
    want = (1 - alpha) * T * T * kl + alpha * F.cross_entropy(s, y)
    assert math.isclose(float(got), float(want), rel_tol=1e-5)


def test_unlabeled_batch_learns_from_teacher_alone():
    torch.manual_seed(1)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.zeros(4, dtype=torch.long)
    none = torch.zeros(4, dtype=torch.bool)
    got = kd_loss(s, y, none, t, 2.0, 0.5)
    kd = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean") * 4
    assert math.isclose(float(got), float(kd), rel_tol=1e-6)


def test_student_matching_teacher_has_zero_kd_loss():
    t = torch.randn(6, 4)
    no_labels = torch.zeros(6, dtype=torch.bool)
    assert float(kd_loss(t.clone(), torch.zeros(6, dtype=torch.long), no_labels, t, 4.0, 0.3)) < 1e-6


def test_labeled_subset_is_stratified_and_sized():
    y = np.repeat(np.arange(10), 50)
    mask = labeled_subset(y, np.ones(len(y), bool), 0.1, seed=0)
    assert mask.sum() == 50
    assert all(mask[y == c].sum() == 5 for c in range(10))


def test_no_per_shift_teacher_precompute_is_left():
    import pipeline.stages.distill as distill
    import pipeline.training as training

    for mod in (training, distill):
        assert not hasattr(mod, "teacher_logits_per_shift") and not hasattr(mod, "teacher_logits_for")
