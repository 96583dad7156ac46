"""Budget search and per-group ratios: Torch-Pruning does the removal, these decide how much goes where."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp

from pipeline.errors import BudgetExceeded
from pipeline.models.mobilenetv2 import make_mobilenetv2_student
from pipeline.pruning import budget
from pipeline.stages.common import classifier_layers, macs_and_params

SHAPE = (1, 16, 16)


def _imp():
    return tp.importance.GroupMagnitudeImportance(p=2)


def _student():
    torch.manual_seed(0)
    return make_mobilenetv2_student(width=2.0).eval()  # widths 32..512: every group is a multiple of 16


def _widths(model):
    return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_group_ratios_round_aligned_groups_and_leave_the_rest():
    groups = [("a", 64), ("b", 16), ("c", 24), ("d", 100)]
    r = budget.group_ratios(groups, 0.3, 16)
    kept = {k: c - (c - int(c * (1 - r[k]))) for k, c in groups}
    assert kept["a"] == 32  # 64 * 0.7 = 44.8 -> 44 -> down to a multiple of 16
    assert kept["b"] == 16  # one multiple wide: not pruned (leaving the multiple costs more than it saves)
    assert kept["c"] == 16  # 24 = 3 x 8: keeps a multiple of 8 (24 * 0.7 = 16.8 -> 16)
    assert kept["d"] == 68  # 100 = 4 x 25: rounded to 4s (70 -> 68)
    r = budget.group_ratios([("e", 33), ("f", 48)], 0.3, 32)
    assert r["e"] == 0.3 and 48 - (48 - int(48 * (1 - r["f"]))) == 32  # odd: plain ratio; 48 -> multiple of 16
    assert budget.group_ratios(groups, 0.3, 1) == {k: 0.3 for k, _ in groups}
    w = budget.group_ratios(groups, 0.3, 1, {"a": 0.6, "b": 0.0, "d": 0.95})
    assert {k: w[k] for k in "abc"} == {"a": 0.6, "b": 0.0, "c": 0.3}  # per group; the rest uniform
    assert int(100 * (1 - w["d"])) == 10  # capped at MAX_GROUP_RATIO: 10 of 100 kept (0.9 itself keeps 9.999 -> 9)


def test_rounded_ratios_give_multiples_after_pruning():
    model = _student()
    x = torch.randn(2, *SHAPE)
    probe = budget.make_pruner(model, x, _imp(), classifier_layers(model, 10), None)
    ratios = budget.group_ratios(budget.groups_of(probe), 0.3, 16)
    budget.make_pruner(model, x, _imp(), classifier_layers(model, 10), ratios).step()
    widths = _widths(model)
    assert all(w % 16 == 0 for w in widths), widths
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize("kind", ["macs", "params"])
def test_search_meets_a_size_budget_with_little_to_spare(kind):
    model = _student()
    x = torch.randn(2, *SHAPE)
    macs0, params0 = macs_and_params(model, SHAPE)
    goal = (macs0 if kind == "macs" else params0) * 0.5

    def measure(m):
        macs, params = macs_and_params(m, SHAPE)
        return {"macs": float(macs), "params": float(params)}

    found = budget.search(model, x, budget.Budget(kind, goal, tolerance=0.15), measure, _imp,
                          lambda m: classifier_layers(m, 10), None, 1)
    assert found.measured <= goal and found.steps and found.steps[-1]["holds"]
    assert found.measured >= goal * 0.6  # not pruned far past the budget
    assert macs_and_params(model, SHAPE) == (macs0, params0)  # the student itself is untouched
    assert measure(found.model)[kind] == found.measured


def test_unreachable_budget_is_budget_exceeded_with_numbers():
    model = _student()

    def measure(m):
        macs, params = macs_and_params(m, SHAPE)
        return {"macs": float(macs), "params": float(params)}

    with pytest.raises(BudgetExceeded, match=r"target params = 10 not reached.*gives params"):
        budget.search(model, torch.randn(2, *SHAPE), budget.Budget("params", 10), measure, _imp,
                      lambda m: classifier_layers(m, 10), None, 1, max_steps=4)
