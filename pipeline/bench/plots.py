"""Latency plots (matplotlib, Agg backend): histogram + CDF per model, and a comparison plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display on CI machines and devices
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path) -> Path:
    from pipeline.fileio import atomic_path

    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    return out


def _clip_x(ax: Any, samples: list, q: float = 99.5) -> None:
    """Limit the x axis to the q-th percentile so one stray iteration does not flatten the plot."""
    import numpy as np

    pooled = np.concatenate([np.asarray(x, dtype=float) for x in samples if len(x)]) if samples else np.zeros(0)
    if pooled.size < 20:
        return
    hi, top = float(np.percentile(pooled, q)), float(pooled.max())
    if top > 1.5 * hi:  # only when a tail would squash the body
        ax.set_xlim(max(0.0, float(pooled.min()) * 0.95), hi * 1.05)
        ax.set_xlabel(f"latency (ms), axis cut at p{q:g}; max {top:.3f} ms")


def plot_latency(doc: dict[str, Any], out: str | Path, title: str | None = None) -> Path:
    """Histogram and empirical CDF of a result's per-iteration latencies, with p50/p90/p99 marked.

    Args:
        doc: a result document; without samples (a trtexec summary) only the percentiles are drawn.
        out: PNG path.
        title: plot title (default: the model path).
    Returns:
        The written path.
    """
    import numpy as np

    plt = _plt()
    lat = doc["latency"]
    s = np.sort(np.asarray(lat.get("samples_ms") or [], dtype=float))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    if s.size:
        hi = float(np.percentile(s, 99.5)) * 1.05 if s.size >= 20 else float(s.max())
        # bins over the body of the distribution; iterations beyond the cut are named on the axis
        ax1.hist(s, bins=min(60, max(10, s.size // 10)), range=(float(s.min()), max(hi, float(s.min()) + 1e-9)),
                 color="#4c72b0")
        ax2.plot(s, np.arange(1, s.size + 1) / s.size, color="#4c72b0", label="host")
    dev = doc.get("device_latency") or {}
    if dev.get("samples_ms"):
        d = np.sort(np.asarray(dev["samples_ms"], dtype=float))
        ax2.plot(d, np.arange(1, d.size + 1) / d.size, color="#dd8452", label="device")
    for k, c in (("p50", "k"), ("p90", "#c44e52"), ("p99", "#8172b2")):
        if lat.get(k) is not None:
            ax1.axvline(lat[k], color=c, ls="--", lw=1, label=f"{k} {lat[k]:.3f} ms")
            ax2.axvline(lat[k], color=c, ls="--", lw=1)
    ax1.set_xlabel("latency (ms)")
    ax1.set_ylabel("iterations")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("latency (ms)")
    ax2.set_ylabel("fraction of iterations")
    ax2.grid(alpha=0.3)
    for ax in (ax1, ax2):
        _clip_x(ax, [s, dev.get("samples_ms") or []])
    if dev.get("samples_ms"):
        ax2.legend(fontsize=8)
    fig.suptitle(title or str(doc.get("model", {}).get("path")), fontsize=10)
    try:
        return _save(fig, out)
    finally:
        plt.close(fig)


def plot_compare(new: dict[str, Any], base: dict[str, Any], verdict: dict[str, Any], out: str | Path) -> Path:
    """CDFs of baseline and new latencies, and each metric's ratio with its confidence interval.

    Returns:
        The written path.
    """
    import numpy as np

    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for doc, label, color in ((base, "baseline", "#4c72b0"), (new, "new", "#c44e52")):
        s = np.sort(np.asarray(doc["latency"].get("samples_ms") or [], dtype=float))
        if s.size:
            ax1.plot(s, np.arange(1, s.size + 1) / s.size, color=color, label=label)
    ax1.set_xlabel("latency (ms)")
    ax1.set_ylabel("fraction of iterations")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    _clip_x(ax1, [d["latency"].get("samples_ms") or [] for d in (base, new)])
    names, ratios, lo, hi, colors = [], [], [], [], []
    for m, e in verdict["metrics"].items():
        if e.get("ratio") is None:
            continue
        names.append(m)
        ratios.append(e["ratio"])
        lo.append(e["ratio"] - (e["ci_low"] if e.get("ci_low") is not None else e["ratio"]))
        hi.append((e["ci_high"] if e.get("ci_high") is not None else e["ratio"]) - e["ratio"])
        colors.append("#c44e52" if e.get("regressed") else "#55a868")
    x = np.arange(len(names))
    ax2.bar(x, ratios, color=colors, yerr=[lo, hi], capsize=6)
    ax2.axhline(1.0, color="k", lw=1)
    ax2.axhline(1 + verdict["budget"], color="#c44e52", ls="--", lw=1, label=f"budget +{verdict['budget']:.0%}")
    ax2.set_xticks(x, names)
    ax2.set_ylabel("new / baseline")
    if ratios:
        top = max(r + h for r, h in zip(ratios, hi, strict=False))
        ax2.set_ylim(min(0.8, min(ratios) - 0.05), max(1.2 + verdict["budget"], top + 0.05))
    ax2.legend(fontsize=8)
    fig.suptitle(f"verdict: {verdict['verdict']}", fontsize=10)
    try:
        return _save(fig, out)
    finally:
        plt.close(fig)
