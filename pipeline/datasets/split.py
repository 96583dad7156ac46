"""Deterministic stratified splits of a labelled data set into train/val/test index arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.errors import UserError


def stratified_split(labels: Sequence[int] | np.ndarray, fractions: Sequence[float] = (0.65, 0.10, 0.25),
                     seed: int = 0) -> tuple[np.ndarray, ...]:
    """Split sample indices so every class is divided in the same proportions.

    Within each class (in sorted label order) the indices are shuffled with one Generator seeded by
    `seed`, and cut into parts of floor(fraction * class size), the samples left over going one each
    to the parts with the largest fractional remainders (ties: the earlier part). The same labels, fractions and
    seed give the same split on any machine (numpy's PCG64 stream is stable).

    Args:
        labels: one integer class per sample, >= 0.
        fractions: the share of each part (e.g. train, val, test), each >= 0, summing to 1.
        seed: shuffling seed.
    Returns:
        One sorted int64 index array per fraction; together they cover every sample exactly once.
    Raises:
        UserError: labels that are not 1-D non-negative integers, or fractions that are not shares of 1.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or len(y) == 0):
        raise UserError(f"stratified_split: labels must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise UserError(f"stratified_split: labels must be >= 0 (unlabeled -1 cannot be stratified), found {y.min()}")
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) < 1 or (f < 0).any() or not np.isfinite(f).all() or abs(f.sum() - 1) > 1e-6:
        raise UserError(f"stratified_split: fractions = {list(fractions)}: need values >= 0 that sum to 1")
    rng = np.random.default_rng(seed % 2**63)
    parts: list[list[np.ndarray]] = [[] for _ in f]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        for k, cut in enumerate(np.split(idx, np.cumsum(_counts(len(idx), f))[:-1])):
            parts[k].append(cut)
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts)


def _counts(n: int, fractions: np.ndarray) -> np.ndarray:
    """Largest-remainder apportionment of n items to the fractions (sums to n exactly)."""
    exact = fractions * n
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")  # stable: ties go to the earlier part
    counts[order[:short]] += 1
    return counts
