"""Sensitivity curves and the allocation: groups that hurt the outputs least per unit saved are pruned first."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp

from pipeline.models.mobilenetv2 import make_mobilenetv2_student
from pipeline.pruning import budget, sensitivity
from pipeline.stages.common import classifier_layers, macs_and_params

SHAPE = (1, 16, 16)


def _imp():
    return tp.importance.GroupMagnitudeImportance(p=2)


def _student():
    torch.manual_seed(0)
    return make_mobilenetv2_student(width=2.0).eval()


def test_curves_measure_each_group_on_copies_and_leave_the_student():
    model = _student()
    x = torch.randn(2, *SHAPE)
    images = torch.randn(16, *SHAPE)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    macs0, params0 = macs_and_params(model, SHAPE)
    got = sensitivity.curves(model, x, images, _imp, lambda m: classifier_layers(m, 10), 16)
    assert macs_and_params(model, SHAPE) == (macs0, params0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    probe = budget.make_pruner(model, x, _imp(), classifier_layers(model, 10), None)
    assert set(got) == {probe.DG._module2name[r] for r, _ in budget.groups_of(probe)}
    pts = [p for points in got.values() for p in points]
    assert pts and all(p.damage >= 0 and p.macs > 0 and p.params > 0 for p in pts)
    for points in got.values():  # rounded widths: distinct, rising ratios; more pruning saves more
        assert [p.ratio for p in points] == sorted({p.ratio for p in points})
        assert all(a.params < b.params for a, b in zip(points, points[1:], strict=False))
    assert any(p.damage > 0 for p in pts)  # pruning a trained-or-random net moves its outputs


def test_allocation_takes_cheap_damage_first_and_is_monotone():
    # group "a" saves a lot for little damage, "b" the opposite; "c" is convex: its cheap first step comes early
    saved = {"a": [(0.25, 4.0, 0.1), (0.5, 8.0, 0.2)],
             "b": [(0.25, 1.0, 1.0), (0.5, 2.0, 2.0)],
             "c": [(0.25, 2.0, 0.1), (0.5, 4.0, 3.0)]}
    total = 8 + 2 + 4
    # a's two points are collinear (one step, 8 saved); order: a, c's first step, b, c's second step
    assert sensitivity.allocate(saved, 6 / total) == {"a": pytest.approx(0.375), "b": 0.0, "c": 0.0}
    assert sensitivity.allocate(saved, 0) == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert sensitivity.allocate(saved, 1) == {"a": 0.5, "b": 0.5, "c": 0.5}
    prev = None
    for s in [i / 20 for i in range(21)]:
        cur = sensitivity.allocate(saved, s)
        if prev is not None:
            assert all(cur[g] >= prev[g] - 1e-12 for g in cur)
        prev = cur
    assert sensitivity.allocate(saved, 10 / total) == {"a": 0.5, "b": 0.0, "c": pytest.approx(0.25)}
    assert sensitivity.allocate(saved, 11 / total) == {"a": 0.5, "b": pytest.approx(0.25), "c": pytest.approx(0.25)}


def test_noisy_dips_and_concave_curves_are_convexified():
    # damage falls at 0.5 (noise): treated as flat; the 0.25 point above the chord is skipped
    steps = sensitivity._convex_steps([(0.25, 1.0, 0.9), (0.5, 2.0, 0.5), (0.75, 3.0, 3.0)])
    assert [(a, b) for a, b, _, _ in steps] == [(0.0, 0.5), (0.5, 0.75)]
    assert steps[0][3] < steps[1][3]


def test_savings_use_time_for_timed_budgets_and_measured_counts_otherwise():
    curves = {"a": [sensitivity.Point(0.5, 0.2, 100.0, 10.0)], "b": [sensitivity.Point(0.25, 0.1, 50.0, 5.0)]}
    assert sensitivity.savings(curves, "speedup", {"a": 2.0}) == {"a": [(0.5, 1.0, 0.2)], "b": [(0.25, 0.0, 0.1)]}
    assert sensitivity.savings(curves, "macs") == {"a": [(0.5, 100.0, 0.2)], "b": [(0.25, 50.0, 0.1)]}
    assert sensitivity.savings(curves, "params")["b"] == [(0.25, 5.0, 0.1)]


def test_search_with_an_allocation_meets_a_params_budget():
    model = _student()
    x = torch.randn(2, *SHAPE)
    ignored = lambda m: classifier_layers(m, 10)  # noqa: E731
    table = sensitivity.savings(sensitivity.curves(model, x, torch.randn(16, *SHAPE), _imp, ignored, 1), "params")
    _, params0 = macs_and_params(model, SHAPE)

    def measure(m):
        macs, params = macs_and_params(m, SHAPE)
        return {"macs": float(macs), "params": float(params)}

    found = budget.search(model, x, budget.Budget("params", params0 * 0.6, tolerance=0.15), measure, _imp, ignored,
                          lambda s: sensitivity.allocate(table, s), 1)
    assert found.measured <= params0 * 0.6 and found.steps[-1]["holds"]
    assert len(set(found.ratios.values())) > 1  # not one ratio for all
    assert found.model(x).shape == (2, 10)


def test_a_coarse_step_that_overshoots_is_left_to_finer_groups():
    # "slow": one step of one channel multiple saves 6 (cheapest damage); "fine": 8 steps of 1 each
    saved = {"slow": [(0.5, 6.0, 0.06)], "fine": [(0.8, 8.0, 0.4)]}
    q = {"slow": 0.5, "fine": 0.1}
    total = 14.0
    assert sensitivity.allocate(saved, 6 / total, q) == {"slow": 0.5, "fine": 0.0}
    # 2 wanted: "slow"'s step (6) rounds to zero multiples, so "fine" fills it with two of its steps
    assert sensitivity.allocate(saved, 2 / total, q) == {"slow": 0.0, "fine": pytest.approx(0.2)}
    # 4 wanted: "slow" rounds up to its whole step (overshoot by 2 beats undershoot by 4)
    assert sensitivity.allocate(saved, 4 / total, q) == {"slow": 0.5, "fine": 0.0}
    # without quanta the step is cut exactly (a ratio the rounding would not keep)
    assert sensitivity.allocate(saved, 2 / total) == {"slow": pytest.approx(1 / 6), "fine": 0.0}
    saved_by_s = [sum(6.0 * r / 0.5 if g == "slow" else 10 * r for g, r in sensitivity.allocate(saved, s, q).items())
                  for s in [i / 28 for i in range(29)]]
    assert all(abs(v - s * total) <= 3.0 + 1e-9 for v, s in zip(saved_by_s, [i / 28 for i in range(29)], strict=True))


def test_ratios_on_a_channel_multiple_keep_that_width():
    # 1 - 32/96 in floats: Torch-Pruning's int(96 * (1 - r)) gives 31, an unaligned width
    assert int(96 * (1 - (1 - 32 / 96))) == 31  # the float trap this guards against
    for c, keep in ((96, 32), (48, 16), (80, 16), (48, 32)):
        r = budget.rounded_ratio(c, 1 - keep / c, 16)
        assert int(c * (1 - r)) == keep
