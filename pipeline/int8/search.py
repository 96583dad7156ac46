"""The accuracy-aware INT8 search: the fastest QDQ model that meets the budget, within a time budget.

Steps, each measured on the search slice by running whole models the way the target runs them:

1. reduce_range candidates (7-bit weights or not; which ones the caller allows from the ISA facts);
2. calibration candidates from ONE statistics pass (`calibrate.ActivationStats`): MinMax, entropy,
   percentile(p), and fewer calibration samples;
3. cross-layer equalization and empirical bias correction, each kept only when it raises the score (or,
   at an equal score, the output SNR by > `SNR_GAIN_DB`);
4. when the budget is still missed: per-layer sensitivity (`sensitivity.rank_layers`) and the smallest
   prefix of the fallback order that meets the budget (binary search over the prefix length).

Every candidate is recorded with its numbers. Choosing between the models that meet the budget (by
latency, against FP32 too) is the caller's: latency needs the target's runtime, which lives in the
layers above this package.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.int8.calibrate import ActivationStats, CalibCandidate
from pipeline.int8.evaluate import Budget, EvalResult, Evaluator
from pipeline.int8.qdq import RunSpec, build_qdq, input_name, predictor, preprocess, weighted_nodes
from pipeline.int8.sensitivity import fallback_order, path_for, rank_layers

SNR_GAIN_DB = 0.1  # an optional step must raise the output SNR by this much (at an equal score) to be kept
STEPS_SHARE = 0.4  # of search_seconds for calibration candidates (the fallback needs the rest on big nets)


@dataclass(frozen=True)
class SearchOptions:
    """What the search may try, and for how long."""

    scheme: Any  # pipeline.targets.QuantScheme (reduce_range is decided here from `reduce_range`)
    budget: Budget
    run: RunSpec = RunSpec()
    reduce_range: tuple[bool, ...] = (False,)
    methods: tuple[str, ...] = ("minmax", "percentile", "entropy")
    percentiles: tuple[float, ...] = (99.99, 99.999)
    sample_counts: tuple[int, ...] = ()  # () = all calibration images, and a quarter of them
    equalize: bool = True
    bias_correction: bool = True
    fallback: bool = True
    max_float_layers: int = 16
    sensitivity: str = "float_one"
    search_seconds: float = 600.0
    fixed_exclusions: tuple[str, ...] = ()


@dataclass
class SearchResult:
    """The search's outcome; `best` is the best candidate that meets the budget, else the best one seen."""

    reference: EvalResult
    best: dict
    meets: bool
    candidates: list = field(default_factory=list)
    ranked: list = field(default_factory=list)
    steps: dict = field(default_factory=dict)  # which optional steps were kept, and why
    seconds: float = 0.0
    timed_out: bool = False
    fp32_path: Path | None = None  # the pre-processed FP32 graph the candidates were made from


def run_search(fp32_onnx: Path, calib_x, evaluator: Evaluator, opts: SearchOptions, workdir: Path,
               log: Callable[[str], None] = print) -> SearchResult:
    """Search quantization settings for `fp32_onnx` (see the module docstring).

    Args:
        fp32_onnx: the FP32 model.
        calib_x: calibration inputs (training data only), batch first.
        evaluator: the search slice's evaluator (its reference is bound here).
        opts: `SearchOptions`.
        workdir: scratch folder for candidate models.
        log: progress lines.
    Returns:
        SearchResult; candidate records carry "path" (their ONNX in `workdir`).
    """
    t0 = time.monotonic()
    deadline = t0 + opts.search_seconds
    workdir.mkdir(parents=True, exist_ok=True)
    pre = preprocess(fp32_onnx, workdir / "fp32_pre.onnx")
    ref = evaluator.bind_reference(predictor(pre, RunSpec(False, opts.run.graph_optimization_level,
                                                          opts.run.providers, opts.run.threads)))
    n = len(calib_x)
    counts = tuple(sorted({min(c, n) for c in (opts.sample_counts or (max(1, n // 4), n))}))
    stats = ActivationStats(pre, calib_x, counts, workdir, input_name(pre))
    res = SearchResult(reference=ref, best={}, meets=False, fp32_path=pre)
    caches: dict = {}

    def cache_for(model_key: str, st: ActivationStats, cand: CalibCandidate):
        key = (model_key, cand)
        if key not in caches:
            path = workdir / f"ranges_{len(caches)}.json"
            caches[key] = (path, st.write_cache(cand, path))
        return caches[key]

    def attempt(label: str, model: Path, model_key: str, st: ActivationStats, cand: CalibCandidate, rr: bool,
                exclude: Sequence[str], **info) -> dict:
        t = time.monotonic()
        path = path_for(workdir, f"{len(res.candidates)}_{label}")
        cache, method = cache_for(model_key, st, cand)
        if model_key == "bias_correction" and set(exclude) - set(fixed):
            from pipeline.int8.bias_correction import restore_biases

            # a layer kept in float has no rounding to correct: its original bias goes back
            model = restore_biases(model, pre, sorted(set(exclude) - set(fixed)),
                                   workdir / "fp32_partly_corrected.onnx")
        build_qdq(model, path, cache, method, opts.scheme, rr, exclude)
        got = evaluator.evaluate(predictor(path, opts.run))
        misses = opts.budget.misses(ref, got)
        rec = {"label": label, "reduce_range": rr, "calibration": cand.label, "float_nodes": list(exclude),
               **info, **got.to_dict(), "drop_pp": round((ref.score - got.score) * 100, 3), "meets": not misses,
               "misses": misses, "seconds": round(time.monotonic() - t, 2), "path": path,
               "_cand": cand, "_model": model, "_key": model_key, "_stats": st}
        res.candidates.append(rec)
        if info.get("step") == "sensitivity":
            path.unlink(missing_ok=True)  # 50 probe models of a 224 px net would fill the run folder
        agree = "" if got.agreement is None else f", agreement {got.agreement * 100:.1f}%"
        snr = "" if got.snr_db is None else f", SNR {got.snr_db:.1f} dB"
        meets = " (meets budget)" if not misses else ""
        log(f"[quantize] {label}: score {got.score * 100:.2f}%{agree}{snr}{meets} [{time.monotonic() - t0:.0f} s]")
        return rec

    fixed = list(opts.fixed_exclusions)
    best_cal = CalibCandidate("minmax", counts[-1])
    # 1. reduce_range
    rr_recs = [attempt(f"minmax, reduce_range {rr}", pre, "pre", stats, best_cal, rr, fixed, step="reduce_range")
               for rr in opts.reduce_range]
    best = max(rr_recs, key=_key)
    rr = best["reduce_range"]
    res.steps["reduce_range"] = {"chosen": rr, "tried": {str(r["reduce_range"]): r["score"] for r in rr_recs}}
    # 2. calibration: cheap candidates first, entropy (the slowest to compute) last; the calibration and
    # graph steps get at most STEPS_SHARE of the time, so the float fallback keeps the rest
    steps_deadline = t0 + STEPS_SHARE * opts.search_seconds
    cands = [CalibCandidate(m, c, p) for m in sorted(opts.methods, key=("minmax", "percentile", "entropy").index)
             for c in (counts if m == "minmax" else counts[-1:])
             for p in ((opts.percentiles or (99.99,)) if m == "percentile" else (None,))]
    for cand in cands:
        if cand == best_cal or time.monotonic() > steps_deadline:
            continue
        rec = attempt(f"{cand.label}", pre, "pre", stats, cand, rr, fixed, step="calibration")
        best = max(best, rec, key=_key)
    res.steps["calibration"] = {"chosen": best["calibration"],
                                "tried": [c.label for c in cands if any(r["_cand"] == c for r in res.candidates)]}
    # 3. optional graph steps on the FP32 graph, each kept only when it measurably helps
    model, key, st, cand = best["_model"], best["_key"], best["_stats"], best["_cand"]
    # CLE first: bias correction measures the rounding of the weights that will actually ship
    for step, enabled in (("equalize", opts.equalize), ("bias_correction", opts.bias_correction)):
        if not enabled or time.monotonic() > max(steps_deadline, t0 + 0.6 * opts.search_seconds):
            res.steps[step] = {"kept": False, "why": "off" if not enabled else "out of search time"}
            continue
        new_model, why = _graph_step(step, model, best["path"], stats, calib_x, workdir, opts)
        if new_model is None:
            res.steps[step] = {"kept": False, "why": why}
            continue
        new_st = st if step == "bias_correction" else ActivationStats(
            new_model, calib_x, (cand.samples,), workdir, input_name(new_model))
        rec = attempt(f"{best['calibration']} + {step}", new_model, step, new_st, cand, rr, fixed, step=step)
        keep = _key(rec) > _key(best) and (rec["score"] > best["score"]
                                          or (rec.get("snr_db") or 0) > (best.get("snr_db") or 0) + SNR_GAIN_DB)
        res.steps[step] = {"kept": keep, "why": why, "score": rec["score"], "without": best["score"]}
        if keep:
            best, model, key, st = rec, new_model, step, new_st
    # 4. per-layer float fallback
    if not best["meets"] and opts.fallback and time.monotonic() < deadline:
        best = _fallback(best, attempt, model, key, st, cand, rr, fixed, opts, deadline, res, log) or best
    res.best = best if best["meets"] else max(res.candidates, key=_key)
    res.meets = bool(res.best["meets"])
    for rec in res.candidates:  # keep the files the caller may still time or ship
        if rec is not res.best and rec["float_nodes"] != fixed and not rec["meets"]:
            Path(rec["path"]).unlink(missing_ok=True)
    res.timed_out = time.monotonic() > deadline
    res.seconds = round(time.monotonic() - t0, 1)
    return res


def _key(rec: dict) -> tuple:
    """Order: meets the budget, then score, then SNR, then fewer float layers."""
    return (rec["meets"], rec["score"], rec.get("snr_db") or 0.0, -len(rec["float_nodes"]))


def _graph_step(step: str, model: Path, qdq: Path, stats: ActivationStats, calib_x, workdir: Path,
                opts: SearchOptions) -> tuple[Path | None, str]:
    """Apply CLE or bias correction to the FP32 graph; (new model or None, what was done / why not)."""
    if step == "equalize":
        from pipeline.int8.equalize import equalize

        return equalize(model, workdir / "fp32_equalized.onnx", stats)
    from pipeline.int8.bias_correction import correct_biases

    return correct_biases(model, qdq, workdir / "fp32_bias_corrected.onnx", calib_x[:64])


def _fallback(best, attempt, model, key, st, cand, rr, fixed, opts, deadline, res, log) -> dict | None:
    """Rank layers, then the shortest prefix of the fallback order that meets the budget."""
    nodes = [n for n in weighted_nodes(model) if n["name"] not in fixed]
    log(f"[quantize] budget missed ({'; '.join(best['misses'])}): measuring {len(nodes)} layers' sensitivity")

    def score(exclude: list[str]) -> dict:
        return attempt(f"sensitivity {len(res.candidates)}", model, key, st, cand, rr, exclude, step="sensitivity")

    res.ranked = rank_layers(nodes, best, score, fixed, opts.sensitivity, deadline, log)
    units = fallback_order(res.ranked)

    def union(k: int) -> list[str]:
        return sorted(set(fixed).union(*[set(u) for u in units[:k]]))

    while len(units) > 1 and len(union(len(units))) - len(fixed) > opts.max_float_layers:
        units.pop()
    if not units or len(union(1)) - len(fixed) > opts.max_float_layers:
        return None
    lo, hi = 1, len(units)
    top = attempt(f"float units x{hi}", model, key, st, cand, rr, union(hi), step="fallback")
    if not top["meets"]:
        grown = _grow_prefix(nodes, attempt, model, key, st, cand, rr, fixed, opts, deadline)
        tries = [r for r in (top, grown) if r is not None and _key(r) > _key(best)]
        return max(tries, key=_key) if tries else None
    found = top
    while lo < hi and time.monotonic() < deadline:
        mid = (lo + hi) // 2
        rec = attempt(f"float units x{mid}", model, key, st, cand, rr, union(mid), step="fallback")
        if rec["meets"]:
            hi, found = mid, rec
        else:
            lo = mid + 1
    return found


def _grow_prefix(nodes, attempt, model, key, st, cand, rr, fixed, opts, deadline) -> dict | None:
    """The second rung when the helpful units together miss: a growing float run from the input (the
    high-resolution, few-channel first layers are where CNNs lose most), then the shortest that meets."""
    order = [n["name"] for n in nodes]
    cap = min(opts.max_float_layers, len(order))
    step = max(1, -(-len(order) // 16))
    best, prev = None, 0
    for k in sorted({*range(step, cap + 1, step), cap}):
        if time.monotonic() > deadline:
            break
        rec = attempt(f"float prefix x{k}", model, key, st, cand, rr, sorted(set(fixed) | set(order[:k])),
                      step="fallback")
        best = rec if best is None or _key(rec) > _key(best) else best
        if rec["meets"]:
            lo, hi = prev + 1, k
            while lo < hi and time.monotonic() < deadline:
                mid = (lo + hi) // 2
                r = attempt(f"float prefix x{mid}", model, key, st, cand, rr, sorted(set(fixed) | set(order[:mid])),
                            step="fallback")
                if r["meets"]:
                    hi, best = mid, r
                else:
                    lo = mid + 1
            return best
        prev = k
    return best
