"""Latency regression gate: ratio of quantiles (new / baseline) with a block-bootstrap confidence interval.

Method (documented with measured error rates in benchmarks/README.md):
- For each metric (p50 and p90 by default) the point estimate is quantile(new) / quantile(base).
- Uncertainty: a moving-block bootstrap over each run's per-iteration samples (blocks of ~sqrt(n)
  consecutive iterations, so slow drift inside a run widens the interval instead of being ignored);
  `n_boot` resamples give a two-sided `confidence` interval for the ratio.
- With a reference model measured interleaved in both runs, the ratio is normalised:
  (new / new_ref) / (base / base_ref). Machine speed changes between the two runs cancel; new and
  new_ref are resampled with the same block indices because they were measured side by side.
- A metric regresses only when the LOWER bound of its interval exceeds 1 + budget: the slowdown is
  larger than the budget with (1 + confidence) / 2 certainty. A point ratio above budget with a lower
  bound below it is reported as "inconclusive" (a warning, exit 0).
- Results without samples (a trtexec log without --exportTimes) fall back to the point ratio, and
  the verdict says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.bench.stats import QUANTILES
from pipeline.errors import UserError

COMPARE_SCHEMA = "edgepipe.compare/1"


def parse_budget(text: str | float) -> float:
    """`10%`, `10` (percent) or `0.1` -> 0.10."""
    s = str(text).strip()
    try:
        v = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise UserError(f"--max-regression {text!r}: expected a percentage like 10% or a fraction like 0.1") from None
    if not s.endswith("%") and v >= 1:
        v = v / 100  # "10" means 10 %
    if not (0 <= v < 10):
        raise UserError(f"--max-regression {text!r}: must be between 0% and 1000%")
    return v


def _block_indices(n: int, n_boot: int, rng) -> Any:
    """(n_boot, n) indices of a circular moving-block bootstrap with block length ~sqrt(n)."""
    import numpy as np

    L = max(1, int(round(n ** 0.5)))
    nb = -(-n // L)
    starts = rng.integers(0, n, size=(n_boot, nb))
    idx = (starts[:, :, None] + np.arange(L)[None, None, :]) % n
    return idx.reshape(n_boot, nb * L)[:, :n]


def _boot_quantile(samples: Sequence[float], q: float, idx) -> Any:
    import numpy as np

    a = np.asarray(samples, dtype=np.float64)
    return np.percentile(a[idx], q, axis=1)


def round_normalised(lat: dict[str, Any], ref: dict[str, Any]) -> list[float] | None:
    """Each sample divided by the reference model's median latency in the same interleaving round.

    Returns None unless both were measured interleaved with identical round structure. Slow drift
    and bursts of machine contention that last a round or longer cancel sample by sample.
    """
    import numpy as np

    bl, br = lat.get("blocks") or [], ref.get("blocks") or []
    s, r = lat.get("samples_ms") or [], ref.get("samples_ms") or []
    if not bl or bl != br or sum(bl) != len(s) or sum(br) != len(r):
        return None
    out, i = [], 0
    for n in bl:
        med = float(np.median(r[i:i + n]))
        if med <= 0:
            return None
        out.extend(x / med for x in s[i:i + n])
        i += n
    return out


def _pair(a: Sequence[float], ref: Sequence[float] | None, q: float, n_boot: int, rng):
    """Bootstrap distribution of quantile(a) [/ quantile(ref), resampled jointly when lengths match]."""
    idx = _block_indices(len(a), n_boot, rng)
    qa = _boot_quantile(a, q, idx)
    if ref is None:
        return qa
    ridx = idx if len(ref) == len(a) else _block_indices(len(ref), n_boot, rng)
    return qa / _boot_quantile(ref, q, ridx)


def compare_docs(
    new: dict[str, Any],
    base: dict[str, Any],
    budget: float = 0.10,
    metrics: Sequence[str] = ("p50", "p90"),
    timing: str = "host",
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    use_reference: bool | None = None,
) -> dict[str, Any]:
    """Decide whether `new` is slower than `base` by more than `budget`.

    Args:
        new, base: result documents (`pipeline.bench.result`).
        budget: allowed slowdown as a fraction (0.10 = 10 %).
        metrics: quantiles to gate on (p50, p90, p95, p99) or "mean".
        timing: "host" or "device".
        confidence: two-sided confidence of the interval (0.95 -> 97.5 % one-sided lower bound).
        n_boot: bootstrap resamples.
        seed: RNG seed (the verdict is reproducible).
        use_reference: normalise by the reference model; None = when both documents have one.
    Returns:
        The verdict dict (schema `edgepipe.compare/1`); `regression` is True when any metric's lower
        bound exceeds 1 + budget.
    """
    import numpy as np

    from pipeline.bench.fingerprint import differences
    from pipeline.bench.result import timing_section

    for m in metrics:
        if m not in QUANTILES and m != "mean":
            raise UserError(f"metric {m!r} (allowed: {', '.join(QUANTILES)}, mean)")
    if not (0.5 <= confidence < 1):
        raise UserError(f"confidence = {confidence}: must be in [0.5, 1)")
    ns, bs = timing_section(new, timing, "new result"), timing_section(base, timing, "baseline")
    tn, tb = new.get("transfers"), base.get("transfers")
    if tn and tb and tn != tb and "n/a" not in (tn, tb) and timing == "device":
        raise UserError(f"device times are not comparable: host<->device copies {tn} in the new result, "
                        f"{tb} in the baseline; measure both with the same --transfers")
    have_ref = isinstance(new.get("reference"), dict) and isinstance(base.get("reference"), dict)
    if use_reference and not have_ref:
        raise UserError("--reference normalisation asked for, but the new result or the baseline has no "
                        "reference measurement")
    ref = have_ref if use_reference is None else bool(use_reference and have_ref)
    warnings: list[str] = []
    if tn and tb and tn != tb:
        warnings.append(f"host<->device copies: {tn} (new) vs {tb} (baseline); latencies measure different things")
    if ref and timing == "device":
        warnings.append("reference normalisation uses host timing of the reference model")
    if ref and new["reference"].get("sha256") and new["reference"].get("sha256") != base["reference"].get("sha256"):
        warnings.append("the reference model differs between the two runs (sha256): normalisation may be biased")
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    # bootstrap work is n_boot x samples; long --duration runs can hold 10^5 samples
    longest = max(len(ns.get("samples_ms") or []), len(bs.get("samples_ms") or []), 1)
    n_boot = int(max(200, min(n_boot, 4_000_000 // longest)))
    out_metrics: dict[str, Any] = {}
    for m in metrics:
        q = QUANTILES.get(m)
        entry: dict[str, Any] = {"new": ns.get(m), "base": bs.get(m)}
        nsmp, bsmp = ns.get("samples_ms") or [], bs.get("samples_ms") or []
        nref = new["reference"]["latency"] if ref else None
        bref = base["reference"]["latency"] if ref else None
        if entry["new"] is None or entry["base"] is None or (ref and (nref.get(m) is None or bref.get(m) is None)):
            entry.update(ratio=None, ci_low=None, ci_high=None, regressed=None, method="missing")
            warnings.append(f"{m}: not present in both results; not gated")
            out_metrics[m] = entry
            continue
        point = entry["new"] / entry["base"]
        if ref:
            point = point / (nref[m] / bref[m])
        have_samples = len(nsmp) >= 10 and len(bsmp) >= 10 and (
            not ref or (len(nref.get("samples_ms") or []) >= 10 and len(bref.get("samples_ms") or []) >= 10)
        )
        nn = round_normalised(ns, nref) if ref else None
        bn = round_normalised(bs, bref) if ref else None
        if have_samples and q is not None and nn is not None and bn is not None:
            # per-round normalisation: the ratio of quantiles of normalised samples
            point = float(np.percentile(nn, q) / np.percentile(bn, q))
            ratios = _pair(nn, None, q, n_boot, rng) / _pair(bn, None, q, n_boot, rng)
            lo, hi = (float(x) for x in np.quantile(ratios, [alpha, 1 - alpha]))
            entry.update(ratio=point, ci_low=lo, ci_high=hi,
                         method="block-bootstrap, per-round reference normalisation")
            entry["regressed"] = lo > 1 + budget
        elif have_samples and q is not None:
            dn = _pair(nsmp, nref.get("samples_ms") if ref else None, q, n_boot, rng)
            db = _pair(bsmp, bref.get("samples_ms") if ref else None, q, n_boot, rng)
            ratios = dn / db
            lo, hi = (float(x) for x in np.quantile(ratios, [alpha, 1 - alpha]))
            entry.update(ratio=point, ci_low=lo, ci_high=hi, method="block-bootstrap")
            entry["regressed"] = lo > 1 + budget
        if entry.get("ci_low") is not None:
            lo, hi = entry["ci_low"], entry["ci_high"]
            if not entry["regressed"] and point > 1 + budget:
                warnings.append(
                    f"{m}: inconclusive - point ratio {point:.3f} is over budget but the {confidence:.0%} "
                    f"interval [{lo:.3f}, {hi:.3f}] is not; measure more iterations (--iterations/--duration)"
                )
        else:
            entry.update(ratio=point, ci_low=None, ci_high=None, method="point")
            entry["regressed"] = point > 1 + budget
            warnings.append(f"{m}: decided on the point ratio without uncertainty (no per-iteration samples in "
                            "both results, or no bootstrap for this metric)")
        out_metrics[m] = entry
    fp_diff = differences(new.get("fingerprint") or {}, base.get("fingerprint") or {})
    if fp_diff:
        warnings.append("environment: " + "; ".join(fp_diff))
    regression = any(e.get("regressed") for e in out_metrics.values())
    return {
        "schema": COMPARE_SCHEMA,
        "budget": budget,
        "timing": timing,
        "confidence": confidence,
        "n_boot": n_boot,
        "normalized_by_reference": ref,
        "metrics": out_metrics,
        "regression": regression,
        "verdict": "regression" if regression else "ok",
        "exit_code": 1 if regression else 0,
        "rule": f"regression when the lower {confidence:.0%}-CI bound of new/base exceeds {1 + budget:.3f}",
        "environment_differences": fp_diff,
        "warnings": warnings,
    }


def reference_as_baseline(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a result measured with `--reference OLD` into (new, baseline) for a same-run A/B compare.

    The model and the reference were measured in alternating blocks in one run, so machine drift
    and contention hit both alike: the most reliable comparison on a shared machine.
    """
    ref = doc.get("reference")
    if not isinstance(ref, dict) or not isinstance(ref.get("latency"), dict):
        raise UserError("a single result can only be compared when it holds a reference measurement "
                        "(`edgepipe bench NEW --reference BASELINE_MODEL --json OUT`); or give BASELINE.json")
    new = dict(doc, reference=None)
    base = dict(doc, reference=None, latency=ref["latency"], device_latency=None,
                model={"path": ref.get("model"), "sha256": ref.get("sha256"), "runtime": doc["model"].get("runtime")})
    return new, base


def verdict_lines(v: dict[str, Any]) -> list[str]:
    """Human-readable verdict, one line per metric."""
    lines = []
    for m, e in v["metrics"].items():
        if e.get("ratio") is None:
            lines.append(f"{m}: n/a")
            continue
        ci = "" if e.get("ci_low") is None else f"  {v['confidence']:.0%} CI [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"
        flag = "REGRESSION" if e["regressed"] else "ok"
        lines.append(f"{m}: new {e['new']:.4f} ms / base {e['base']:.4f} ms -> ratio {e['ratio']:.3f}{ci}  {flag}")
    norm = " (normalised by the reference model)" if v["normalized_by_reference"] else ""
    lines.append(f"verdict: {v['verdict'].upper()} at budget +{v['budget']:.0%}{norm}")
    lines += ["WARNING: " + w for w in v["warnings"]]
    return lines
