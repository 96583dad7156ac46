"""Prune to a budget instead of a ratio: per-group ratios (uniform, or allocated by `sensitivity`; rounded to the
hardware's channel multiple) from one strength knob, and a bisection on that knob until the measured budget holds.

Torch-Pruning does the removal (`pruning_ratio_dict`: one ratio per group root); this module only decides the
ratios. A candidate is a pruned deep copy of the student; the smallest strength whose candidate meets the
budget wins, so the model loses no more channels than the budget needs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TIMED = ("latency_ms", "speedup")  # budget kinds measured by running the model (the rest are counted)
MAX_GROUP_RATIO = 0.9  # never remove more than 90 % of one group: a 1-channel bottleneck wrecks accuracy


@dataclass(frozen=True)
class Budget:
    """What the pruned model must reach: latency_ms / macs / params at most `value`, speedup at least it."""

    kind: str  # "latency_ms" | "speedup" | "macs" | "params"
    value: float
    tolerance: float = 0.05  # stop searching once the budget holds with at most this much to spare

    def holds(self, measured: float) -> bool:
        """Whether a measured value meets the budget."""
        return measured >= self.value if self.kind == "speedup" else measured <= self.value

    def tight(self, measured: float) -> bool:
        """Whether it meets it with little to spare (close enough: more pruning would cost accuracy)."""
        if self.kind == "speedup":
            return self.value <= measured <= self.value * (1 + self.tolerance)
        return self.value * (1 - self.tolerance) <= measured <= self.value


@dataclass
class SearchResult:
    """The chosen candidate and the steps that found it."""

    model: Any
    strength: float
    ratios: dict[str, float]  # group root name -> pruning ratio
    measured: float
    steps: list[dict[str, Any]] = field(default_factory=list)


def rounded_ratio(channels: int, ratio: float, multiple: int) -> float:
    """The Torch-Pruning ratio that removes about `ratio` of a group and keeps a width the hardware likes.

    Args:
        channels: the group's width.
        ratio: the wanted fraction removed (capped at MAX_GROUP_RATIO).
        multiple: the width is rounded down to a multiple of gcd(width, multiple), at least one of it: a
            width that is a multiple stays one, 48 with multiple 32 keeps a multiple of 16, a width of
            exactly one such block is not pruned, an odd width gets the plain ratio. Measured on ONNX
            Runtime's CPU kernels (benchmarks/prune_channel_multiple.py): widths that lose their alignment
            made a pruned MobileNetV2 slower than the unpruned one.
    Returns:
        A ratio exact for Torch-Pruning's `n_pruned = C - int(C * (1 - ratio))`.
    """
    r = min(MAX_GROUP_RATIO, max(0.0, ratio))
    plain = int(channels * (1 - r) + 1e-6)  # 1 - 32/96 must keep 32, not 31.999 -> 31
    step = math.gcd(channels, multiple)
    keep = max(step, plain // step * step) if step > 1 else plain
    if keep == int(channels * (1 - r)):  # Torch-Pruning keeps `keep` with the ratio itself: pass it through
        return r
    # +0.5 so int(C * (1 - ratio)) lands on `keep` despite float rounding
    return max(0.0, 1.0 - (keep + 0.5) / channels) if keep < channels else 0.0


def group_ratios(groups: list[tuple[Any, int]], strength: float, multiple: int,
                 per_group: dict[Any, float] | None = None) -> dict[Any, float]:
    """One Torch-Pruning ratio per group root.

    Args:
        groups: [(root module, its channel count)].
        strength: the ratio of every group (uniform pruning), used where `per_group` has no entry.
        multiple: channel multiple (see `rounded_ratio`).
        per_group: root -> wanted ratio (from `sensitivity.allocate`), or None for uniform.
    Returns:
        root -> rounded ratio.
    """
    per_group = per_group or {}
    return {root: rounded_ratio(c, per_group.get(root, strength), multiple) for root, c in groups}


def macs_and_params(model: Any, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """Multiply-accumulates for one image, and parameter count (Torch-Pruning's counter)."""
    import torch
    import torch_pruning as tp

    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, *input_shape))
    return int(macs), int(params)


def make_pruner(model: Any, example: Any, importance: Any, ignored: list, ratios: dict[Any, float] | None,
                iterative_steps: int = 1, round_to: int | None = None, ratio: float = 0.0,
                global_pruning: bool = False) -> Any:
    """A Torch-Pruning MetaPruner with per-group ratios (or one global ratio when `ratios` is None)."""
    import torch_pruning as tp

    return tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=ratio,
                                pruning_ratio_dict=ratios or None, global_pruning=global_pruning,
                                iterative_steps=iterative_steps, ignored_layers=ignored, round_to=round_to)


def groups_of(pruner: Any) -> list[tuple[Any, int]]:
    """[(root module, channels)] of a pruner's prunable groups."""
    dg = pruner.DG
    out = []
    for group in dg.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types):
        root = group[0].dep.target.module
        c = dg.get_out_channels(root)
        if c:
            out.append((root, int(c)))
    return out


def pruned_copy(student: Any, example: Any, importance: Callable[[], Any], ignored: Callable[[Any], list],
                strength: float, multiple: int,
                allocation: Callable[[float], dict[str, float]] | None = None) -> tuple[Any, dict[str, float]]:
    """A deep copy of `student` pruned at `strength` (the student itself is left untouched).

    Args:
        student: the unpruned model.
        example: an input batch for Torch-Pruning's tracing.
        importance: makes a fresh Torch-Pruning importance.
        ignored: model -> layers never pruned (the classifier).
        strength: one uniform ratio, or the allocation's strength.
        multiple: channel multiple (see `rounded_ratio`).
        allocation: strength -> group root module name -> ratio, or None for uniform.
    Returns:
        (the pruned copy in eval mode, group root module name -> the ratio it was pruned by).
    """
    model = copy.deepcopy(student).eval()
    probe = make_pruner(model, example, importance(), ignored(model), None)
    names = probe.DG._module2name
    groups = groups_of(probe)
    wanted = None
    if allocation is not None:
        by_name = allocation(strength)
        wanted = {r: by_name.get(names[r], 0.0) for r, _ in groups}
    ratios = group_ratios(groups, strength, multiple, wanted)
    make_pruner(model, example, importance(), ignored(model), ratios).step()
    return model.eval(), {names[r]: v for r, v in ratios.items()}


def search(student: Any, example: Any, budget: Budget, measure: Callable[[Any], dict[str, float]],
           importance: Callable[[], Any], ignored: Callable[[Any], list],
           allocation: Callable[[float], dict[str, float]] | None, multiple: int, max_steps: int = 8,
           log: Callable[[str], None] = lambda s: None) -> SearchResult:
    """Bisect the strength until the pruned copy meets `budget` (the smallest strength that does).

    Args:
        student: the unpruned model (left untouched; candidates are deep copies).
        example: an input batch for Torch-Pruning's tracing.
        budget: the target.
        measure: candidate model -> {budget.kind: value, ...} (other numbers are recorded in the steps).
        importance: makes a fresh Torch-Pruning importance.
        ignored: model -> layers never pruned (the classifier).
        allocation: strength in [0, 1] -> group root module name -> ratio (`sensitivity.allocate`), or
            None: the strength is one uniform ratio for every group.
        multiple: channel multiple (see `rounded_ratio`).
        max_steps: candidates measured at most.
        log: progress lines.
    Returns:
        SearchResult with the chosen pruned copy.
    Raises:
        pipeline.errors.BudgetExceeded: even the strongest pruning misses the budget (with the numbers).
    """
    from pipeline.errors import BudgetExceeded

    def candidate(strength: float) -> tuple[Any, dict[str, float], dict[str, float]]:
        model, ratios = pruned_copy(student, example, importance, ignored, strength, multiple, allocation)
        return model, measure(model), {name: round(v, 4) for name, v in ratios.items()}

    top = 1.0 if allocation is not None else MAX_GROUP_RATIO  # an allocation's strength is a share of its range
    steps: list[dict[str, Any]] = []
    best: tuple[float, Any, dict, dict] | None = None
    lo, hi = 0.0, top
    s = min(top, 0.5)  # a ratio of 0.5 is where most users start
    for _ in range(max_steps):
        model, got, ratios = candidate(s)
        ok = budget.holds(got[budget.kind])
        steps.append({"strength": round(s, 4), **{k: round(v, 4) for k, v in got.items()}, "holds": ok})
        log(f"[prune] search step {len(steps)}: strength {s:.3f} -> {budget.kind} {got[budget.kind]:.4g} "
            f"({'meets' if ok else 'misses'} {budget.value:g})")
        if ok:
            if best is None or s < best[0]:
                best = (s, model, got, ratios)
            if budget.tight(got[budget.kind]):
                break
            hi = s
        else:
            lo = s
            if s >= top:
                break
        s = (lo + hi) / 2 if best is not None or hi < top else min(top, max(s * 1.6, s + 0.1))
        if best is None and lo >= top:
            break
    if best is None:
        last = steps[-1]
        raise BudgetExceeded(
            f"prune: target {budget.kind} = {budget.value:g} not reached: pruning at strength {last['strength']} "
            f"gives {budget.kind} {last[budget.kind]:g} (steps: {len(steps)}); relax prune.target or prune a "
            "smaller student")
    s, model, got, ratios = best
    return SearchResult(model, s, ratios, got[budget.kind], steps)
