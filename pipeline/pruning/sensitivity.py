"""Where pruning is cheap: a sensitivity curve per channel group, and an allocation of the pruning that buys
the most budget (time, MACs or parameters) for the least damage.

One uniform ratio prunes a group that carries the network's signal as hard as one that barely matters.
Here each group is pruned alone, on a copy, at a few ratios (rounded to the channel multiple, as the
search will prune), and the damage is measured before any fine-tune: the KL divergence of the copy's
outputs from the unpruned student's on a few training images. Each step also has a cost it saves: the
group's share of the measured per-layer time (ONNX Runtime's profile) times the ratio, or the MACs /
parameters the pruned copy really lost. The allocation walks all groups' steps in order of damage per
unit saved (each group's curve made convex, so its steps stay in order) until `strength` of the total
saving is taken: a separable, greedy allocation in the spirit of NetAdapt and AMC, with the budget
search (`budget.search`) choosing the strength on measured candidates.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RATIOS = (0.25, 0.5, 0.75)  # ratios tried per group: enough to see the curve bend, 3 copies per group
IMAGES = 64  # training images the damage is measured on: a stable ranking at a second or two per copy


@dataclass(frozen=True)
class Point:
    """One group pruned alone at `ratio` (after rounding): its damage and what it saves."""

    ratio: float
    damage: float  # KL(unpruned || pruned) per image, no fine-tune
    macs: float  # MACs saved
    params: float  # parameters saved
    quantum: float = 0.0  # the group's smallest ratio step: one channel multiple / its width


def curves(student: Any, example: Any, images: Any, importance: Callable[[], Any],
           ignored: Callable[[Any], list], multiple: int, ratios: tuple[float, ...] = RATIOS,
           log: Callable[[str], None] = lambda s: None) -> dict[str, list[Point]]:
    """Each prunable group's damage curve.

    Args:
        student: the unpruned model (left untouched; each point prunes a deep copy).
        example: an input batch for Torch-Pruning's tracing.
        images: the batch the damage is measured on (a few dozen training images).
        importance: makes a fresh Torch-Pruning importance (which channels go inside a group).
        ignored: model -> layers never pruned (the classifier).
        multiple: channel multiple (`budget.rounded_ratio`).
        ratios: wanted ratios; after rounding, points with the same width are measured once.
        log: progress lines.
    Returns:
        group root module name -> points by increasing ratio (empty: the group cannot shrink).
    """
    import math
    import time

    import torch
    import torch.nn.functional as F

    from pipeline.pruning.budget import groups_of, macs_and_params, make_pruner, rounded_ratio

    t0 = time.perf_counter()
    shape = tuple(images.shape[1:])
    student.eval()
    with torch.no_grad():
        reference = F.log_softmax(student(images).float(), dim=1)
    macs0, params0 = macs_and_params(student, shape)
    probe = make_pruner(student, example, importance(), ignored(student), None)
    names = probe.DG._module2name
    out: dict[str, list[Point]] = {}
    for root, channels in groups_of(probe):
        name = names[root]
        points: list[Point] = []
        kept: set[int] = set()
        for wanted in ratios:
            r = rounded_ratio(channels, wanted, multiple)
            keep = int(channels * (1 - r))
            if keep >= channels or keep in kept:
                continue
            kept.add(keep)
            model = copy.deepcopy(student).eval()
            mods = dict(model.named_modules())
            make_pruner(model, example, importance(), ignored(model), {mods[name]: r}).step()
            with torch.no_grad():
                logp = F.log_softmax(model(images).float(), dim=1)
            damage = float(F.kl_div(logp, reference, log_target=True, reduction="batchmean"))
            macs, params = macs_and_params(model, shape)
            points.append(Point(1 - keep / channels, max(0.0, damage), float(macs0 - macs), float(params0 - params),
                                math.gcd(channels, multiple) / channels))
        out[name] = points
    n = sum(len(p) for p in out.values())
    log(f"[prune] sensitivity: {len(out)} groups, {n} pruned copies measured in {time.perf_counter() - t0:.1f} s")
    return out


def savings(curves_: dict[str, list[Point]], kind: str, group_times: dict[str, float] | None = None
            ) -> dict[str, list[tuple[float, float, float]]]:
    """Each point as (ratio, saved, damage) for the budget's kind.

    Args:
        curves_: from `curves`.
        kind: a timed kind (`budget.TIMED`: time from `group_times`), "macs" or "params" (measured on the copies).
        group_times: group root name -> ms of the layers the group resizes (`profile.ort_layer_times` summed
            over `profile.group_modules`); pruning a fraction r of the channels saves about r of it.
    Returns:
        group -> [(ratio, saved, damage)].
    """
    from pipeline.pruning.budget import TIMED

    out = {}
    for g, points in curves_.items():
        if kind in TIMED:
            t = (group_times or {}).get(g, 0.0)
            out[g] = [(p.ratio, p.ratio * t, p.damage) for p in points]
        else:
            out[g] = [(p.ratio, getattr(p, kind), p.damage) for p in points]
    return out


def _convex_steps(points: list[tuple[float, float, float]]) -> list[tuple[float, float, float, float]]:
    """The lower convex hull of (saved, damage) from (0, 0): steps (ratio from, ratio to, saved, slope).

    Damage is made non-decreasing in the ratio first (a noisy dip is not a reason to prune more).
    """
    pts = [(0.0, 0.0, 0.0)]
    worst = 0.0
    for ratio, saved, damage in sorted(points):
        worst = max(worst, damage)
        if saved > pts[-1][1]:
            pts.append((ratio, saved, worst))
    hull = [pts[0]]
    for p in pts[1:]:
        while len(hull) >= 2:
            (_, s1, d1), (_, s2, d2) = hull[-2], hull[-1]
            # drop the middle point when it lies on or above the line from hull[-2] to p
            if (d2 - d1) * (p[1] - s1) >= (p[2] - d1) * (s2 - s1):
                hull.pop()
            else:
                break
        hull.append(p)
    return [(a[0], b[0], b[1] - a[1], (b[2] - a[2]) / (b[1] - a[1])) for a, b in zip(hull, hull[1:], strict=False)]


def quanta(curves_: dict[str, list[Point]]) -> dict[str, float]:
    """Each group's smallest ratio step (one channel multiple), for `allocate`."""
    return {g: points[0].quantum for g, points in curves_.items() if points}


def allocate(saved: dict[str, list[tuple[float, float, float]]], strength: float,
             quantum: dict[str, float] | None = None) -> dict[str, float]:
    """Per-group ratios that save `strength` of the most the curves can save, cheapest damage first.

    Args:
        saved: from `savings`.
        strength: 0 (nothing pruned) .. 1 (every group at its largest measured ratio).
        quantum: group -> its smallest ratio step (`quanta`). A step that would save more than is still
            wanted is taken to the nearest whole number of channel multiples, and that group stops there:
            the rest is filled by the next groups in order. Without it (or 0) the step is cut exactly.
            So a narrow, slow group whose one step saves 7 % of the time leaves no cliff in the search.
    Returns:
        group root name -> ratio.
    """
    steps = []
    for g, pts in saved.items():
        for i, (r0, r1, ds, slope) in enumerate(_convex_steps(pts)):
            steps.append((slope, i, g, r0, r1, ds))
    steps.sort(key=lambda s: (s[0], s[1]))  # a group's convex steps have rising slopes: their order is kept
    want = max(0.0, min(1.0, strength)) * sum(s[5] for s in steps)
    ratios = {g: 0.0 for g in saved}
    stopped: set[str] = set()
    for _, _, g, r0, r1, ds in steps:
        if want <= 1e-12:
            break
        if g in stopped:
            continue
        if ds <= want:
            ratios[g] = r1
            want -= ds
            continue
        take = want / ds
        q = (quantum or {}).get(g, 0.0)
        if q > 0:  # whole channel multiples only: what the rounding to the target's multiple will prune
            take = min(1.0, round(take * (r1 - r0) / q) * q / (r1 - r0))
        ratios[g] = r0 + take * (r1 - r0)
        want -= take * ds
        stopped.add(g)
    return ratios

