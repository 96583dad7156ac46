"""Stage `quantize`: the fastest INT8 QDQ ONNX that meets the accuracy budget, found by a measured search.

`quantize_file` is the one entry point (this stage's `run` and `edgepipe quantize` both call it): the
search in `pipeline.int8.search` tries reduce_range, calibration methods and sample counts, cross-layer
equalization and bias correction, then keeps the fewest, cheapest layers in float until the budget holds;
on CPU targets the models that meet it are timed here against the FP32 model with the target's ONNX
Runtime options, and the FP32 model ships when INT8 is not faster. TensorRT targets are judged as
fake-quant (no TensorRT here), S8S8 symmetric with float biases, and the float layers run in FP16 on
the device where its TensorRT allows it. Decisions are made on a search slice of held-out data; the
final numbers come from a separate slice. A model that still misses the budget is never passed on.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from pipeline.errors import BudgetExceeded
from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.metrics import QuantizeMetrics

FINAL_CHECK_SAMPLES = 2048  # held-out images in the final check (bounded: one array in memory)


def reduce_range_candidates(setting, isa: dict, runtime: str) -> tuple[tuple[bool, ...], str]:
    """Which reduce_range values the search may try, and why.

    Args:
        setting: the target's `quantization.reduce_range` (True, False or "auto").
        isa: `pipeline.isa.int8_facts()` of this host.
        runtime: the target's runtime.
    Returns:
        (candidates, reason).
    """
    if setting != "auto":
        return (bool(setting),), f"fixed by the target (reduce_range: {str(setting).lower()})"
    if runtime == "tensorrt":
        return (False,), "TensorRT accumulates INT8 in int32: nothing saturates"
    if isa["u8s8_saturates"]:
        return (True,), f"{isa['int8_kernel']} without VNNI: u8*s8 pairs saturate int16, so only 7-bit weights"
    return (False, True), f"{isa['int8_kernel']} accumulates in int32: both measured"


def quantize_file(fp32_onnx: Path, calib_x: np.ndarray, evaluator, target, cfg, workdir: Path, log=print,
                  fixed_exclusions: Sequence[str] = (), torch_model=None, train_loader=None,
                  search_evaluator=None, threads: int | None = None,
                  torch_model_available: bool | None = None, fixed_reasons: dict | None = None) -> Artifact:
    """Search, choose, check and write `workdir/model_int8.onnx`.

    Args:
        fp32_onnx: the FP32 model.
        calib_x: calibration inputs from training data only, batch first.
        evaluator: `pipeline.int8.evaluate` evaluator for the final check (and the search, split in two,
            when `search_evaluator` is None).
        target: the Target (scheme, runtime, ONNX Runtime options).
        cfg: `QuantizeConfig`.
        workdir: output folder.
        log: progress lines.
        fixed_exclusions: layers always kept in float (e.g. detector heads): inputs, not candidates.
        torch_model: the FP32 torch model, for QAT when PTQ misses the budget.
        train_loader: its training batches (QAT).
        search_evaluator: held-out data that decides the search (disjoint from `evaluator`'s).
        threads: intra-op threads for the latency comparison (None: the target's).
        torch_model_available: whether a torch model could be given for QAT (for the advice when the budget
            is missed; None: whether `torch_model` was).
        fixed_reasons: why each fixed exclusion stays in float ({node: reason}, e.g. a head's decode), for
            `float_layers` in the metrics.
    Returns:
        Artifact with `model` = model_int8.onnx (FP32 when INT8 is not faster here, said in the metrics).
    Raises:
        BudgetExceeded: no candidate met the budget: the best result, the layers tried, what to try next.
    """
    from pipeline.backends import backend_for
    from pipeline.int8.evaluate import Budget
    from pipeline.int8.qdq import RunSpec, predictor
    from pipeline.int8.search import SearchOptions, run_search
    from pipeline.isa import int8_facts

    workdir.mkdir(parents=True, exist_ok=True)
    trt = target.runtime == "tensorrt"
    isa = int8_facts()
    rr, rr_why = reduce_range_candidates(target.quantization.reduce_range, isa, target.runtime)
    ropts = None if trt else backend_for(target).host_runtime_options(target, threads)
    cpu = ("CPUExecutionProvider",)
    run_spec = RunSpec(fake_quant=trt, graph_optimization_level=ropts.graph_optimization_level if ropts else "all",
                       providers=tuple(ropts.providers or cpu) if ropts else cpu)
    if search_evaluator is None:
        search_evaluator, evaluator = evaluator.split(0.5)
    budget = Budget(cfg.max_accuracy_drop, cfg.min_top1_agreement)
    methods = ("minmax", "percentile", "entropy") if cfg.method == "auto" else (cfg.method,)
    n = min(cfg.calibration_samples, len(calib_x))
    opts = SearchOptions(
        scheme=target.quantization, budget=budget, run=run_spec, reduce_range=rr, methods=methods,
        percentiles=tuple(cfg.percentiles), sample_counts=(max(1, n // 4), n), equalize=cfg.equalize,
        bias_correction=cfg.bias_correction, fallback=cfg.fallback, max_float_layers=cfg.max_float_layers,
        sensitivity=cfg.sensitivity, search_seconds=cfg.search_seconds,
        fixed_exclusions=tuple(sorted(set(fixed_exclusions) | set(cfg.exclude_nodes))))
    log(f"[quantize] reduce_range candidates {list(rr)}: {rr_why}")
    res = run_search(Path(fp32_onnx), calib_x[:n], search_evaluator, opts, workdir / "search", log)
    qat = None
    if not res.meets:
        qat = _try_qat(res, cfg, target, torch_model, train_loader, calib_x, workdir, search_evaluator, run_spec,
                       budget, log)
    if not res.meets:
        has_model = torch_model_available if torch_model_available is not None else torch_model is not None
        raise BudgetExceeded(_missed_message(res, cfg, has_model))
    chosen, decision, reason, latency = _choose(res, target, ropts, calib_x, trt, threads)
    from pipeline.fileio import atomic_path

    out = workdir / "model_int8.onnx"
    with atomic_path(out) as tmp:
        shutil.copyfile(res.fp32_path if decision == "fp32" else chosen["path"], tmp)
    fp32_spec = RunSpec(False, run_spec.graph_optimization_level, run_spec.providers)
    ref = evaluator.bind_reference(predictor(res.fp32_path, fp32_spec))
    got = evaluator.evaluate(predictor(out, fp32_spec if decision == "fp32" else run_spec))
    misses = budget.misses(ref, got)
    log(f"[quantize] {decision}: {reason}; final check score {ref.score * 100:.2f}% -> {got.score * 100:.2f}%"
        f"{'' if got.agreement is None else f', top-1 agreement {got.agreement * 100:.1f}%'}")
    if misses:
        out.unlink(missing_ok=True)
        raise BudgetExceeded(f"quantize: the chosen model ({chosen['label']}) met the budget on the search slice "
                             f"but not on the final check: {'; '.join(misses)}; try more held-out data "
                             "(quantize.search_samples) or a stricter budget for the search")
    metrics = _metrics(res, chosen, decision, reason, latency, ref, got, out, target, isa, rr_why, cfg, n, qat, trt,
                       fixed_reasons or {})
    shutil.rmtree(workdir / "search", ignore_errors=True)  # candidates and scratch: their numbers are in metrics
    return Artifact({"model": out}, "model", metrics)


def _choose(res, target, ropts, calib_x, trt: bool, threads) -> tuple[dict, str, str, dict]:
    """The fastest model meeting the budget (CPU: timed here; TensorRT: fewest float layers, best score)."""
    meeting = [c for c in res.candidates if c["meets"] and Path(c["path"]).exists()]
    by_set: dict[tuple, dict] = {}
    for c in meeting:  # one per float-layer set: the best score (calibration does not change speed)
        k = tuple(c["float_nodes"])
        if k not in by_set or (c["score"], c.get("snr_db") or 0) > (by_set[k]["score"], by_set[k].get("snr_db") or 0):
            by_set[k] = c
    ranked = sorted(by_set.values(), key=lambda c: (len(c["float_nodes"]), -c["score"]))
    if trt:
        return ranked[0], "int8", "TensorRT target: chosen by fake-quant accuracy, fewest float layers", {}
    from pipeline.bench.harness import BenchConfig
    from pipeline.bench.isolated import measure_onnx_interleaved

    models = {"fp32": str(res.fp32_path), **{f"int8_{i}": str(c["path"]) for i, c in enumerate(ranked[:3])}}
    quantized = [c for c in res.candidates if not c["float_nodes"] and Path(c["path"]).exists()]
    if quantized and ranked[0]["float_nodes"]:
        models["all_int8"] = str(quantized[0]["path"])  # what each float layer costs is measured against it
    from pipeline.int8.qdq import input_name

    name_in = input_name(res.fp32_path)  # any input name, not only "input"
    feeds = {k: {name_in: calib_x[:1]} for k in models}
    stats = measure_onnx_interleaved(models, feeds, BenchConfig(warmup=10, iterations=200, threads=threads), ropts)
    p50 = {k: round(s["p50"], 4) for k, s in stats["stats"].items()}
    name = min((k for k in p50 if k.startswith("int8_")), key=p50.get)
    chosen = ranked[int(name.split("_")[1])]
    latency = {"fp32_ms": p50["fp32"], "int8_ms": p50[name], "all_int8_ms": p50.get("all_int8")}
    if p50[name] >= p50["fp32"]:
        return chosen, "fp32", (f"INT8 is not faster on this CPU: {p50[name]:.3f} ms vs {p50['fp32']:.3f} ms FP32 "
                                "(batch 1, the target's ONNX Runtime options)"), latency
    return chosen, "int8", f"INT8 {p50['fp32'] / p50[name]:.2f}x faster than FP32 here (batch 1)", latency


def _try_qat(res, cfg, target, torch_model, train_loader, calib_x, workdir, ev, run_spec, budget, log):
    """QAT with KD as the last rung: evaluated like any candidate, added to `res` when it meets the budget."""
    if not cfg.qat.enabled or torch_model is None or train_loader is None:
        return None
    try:
        from pipeline.int8.qat import qat_to_qdq
    except ImportError:
        log("[quantize] QAT is not available in this installation")
        return {"status": "unavailable"}
    import copy

    from pipeline.int8.qdq import predictor

    out = workdir / "search" / "qat.onnx"
    qat_to_qdq(copy.deepcopy(torch_model), torch_model, train_loader, target.quantization, out,
               epochs=cfg.qat.epochs, lr=cfg.qat.lr, device="cpu", example_shape=tuple(calib_x.shape[1:]),
               opset=17, log=log)
    got = ev.evaluate(predictor(out, run_spec))
    misses = budget.misses(res.reference, got)
    rec = {"label": f"QAT with KD, {cfg.qat.epochs} epoch(s)", "float_nodes": [], "step": "qat", "path": out,
           "meets": not misses, "misses": misses, "reduce_range": False, "calibration": "qat", **got.to_dict(),
           "drop_pp": round((res.reference.score - got.score) * 100, 3)}
    res.candidates.append(rec)
    if not misses:
        res.best, res.meets = rec, True
    return {"status": "met" if not misses else "missed", "score": got.score}


def _missed_message(res, cfg, has_model: bool) -> str:
    b = res.best
    tried = [r["name"] for r in res.ranked if r["measured"]][:8]
    qat = ("enable quantize.qat" if has_model and not cfg.qat.enabled else
           "QAT needs the torch model and training data (`edgepipe run`), not an ONNX file alone"
           if not has_model else "more QAT epochs (quantize.qat.epochs)")
    return (f"quantize: no INT8 model met the budget (quantize.max_accuracy_drop = {cfg.max_accuracy_drop}, "
            f"quantize.min_top1_agreement = {cfg.min_top1_agreement}): best {b['label']} scored "
            f"{b['score'] * 100:.2f}% vs FP32 {res.reference.score * 100:.2f}% ({'; '.join(b['misses'])}), "
            f"after {len(res.candidates)} candidates in "
            f"{res.seconds:.0f} s{' (stopped by quantize.search_seconds)' if res.timed_out else ''}; layers tried in "
            f"float: {', '.join(tried) or 'none'}; try: a larger quantize.max_float_layers or search_seconds, "
            f"more calibration_samples, {qat}, or a looser max_accuracy_drop / min_top1_agreement")


def _metrics(res, chosen, decision, reason, latency, ref, got, out, target, isa, rr_why, cfg, n, qat, trt,
             fixed_reasons):
    all_q = latency.get("all_int8_ms") if latency else None
    from pipeline.int8.qdq import weighted_nodes

    macs = {n["name"]: n["macs"] for n in weighted_nodes(res.fp32_path)}
    unit_of = {}
    for u in res.ranked:  # best unit first: a layer is explained by the best run it was measured in
        for x in u.get("layers", [u["name"]]):
            unit_of.setdefault(x, u)
    total = sum(macs.get(x, 0) for x in chosen["float_nodes"]) or 1
    extra = (latency["int8_ms"] - all_q) if all_q is not None else None

    def why(x: str) -> str:
        u = unit_of.get(x)
        if x in fixed_reasons:
            return f"fixed: {fixed_reasons[x]}"
        if x in set(cfg.exclude_nodes) or u is None:
            return "fixed (quantize.exclude_nodes / the model's heads)"
        return (f"keeping {u['name']} in float gained {u['gain_score'] * 100:+.2f} points, "
                f"{u['gain_snr_db']:+.2f} dB SNR")

    float_layers = [{"name": x, "why": why(x), "macs": macs.get(x),
                     "cost_ms": None if extra is None else round(extra * macs.get(x, 0) / total, 4)}
                    for x in chosen["float_nodes"]]
    return QuantizeMetrics(
        accuracy=got.accuracy if got.accuracy is not None else got.score, accuracy_fp32=ref.accuracy
        if ref.accuracy is not None else ref.score, drop_pp=round((ref.score - got.score) * 100, 2),
        top1_agreement=got.agreement if got.agreement is not None else float("nan"),
        max_abs_diff=got.max_abs_diff if got.max_abs_diff is not None else float("nan"),
        excluded_nodes=list(chosen["float_nodes"]) if decision == "int8" else [],
        attempts=[{k: (str(v) if isinstance(v, Path) else v) for k, v in c.items() if not k.startswith("_")}
                  for c in res.candidates],
        scheme=target.quantization.model_copy(update={"reduce_range": bool(chosen.get("reduce_range"))}),
        method=chosen.get("calibration", "").split(" ")[0], calibration_samples=n, file_bytes=out.stat().st_size,
        decision=decision, reason=reason, search_seconds=res.seconds, search_timed_out=res.timed_out,
        steps=res.steps, float_layers=float_layers, latency_ms=latency or None,
        isa={"reduce_range": rr_why, "int8_kernel": isa["int8_kernel"], "vnni": isa["vnni"], "arch": isa["arch"]},
        fake_quant=trt or None, float_layers_precision=_trt_float_precision(target) if trt else None,
        qat=qat, calibration=chosen.get("calibration"))


def _trt_float_precision(target) -> str:
    """How a TensorRT target runs the layers left in float: FP16 from ONNX types on TensorRT >= 11 (no FP16
    builder flag there), the --fp16 flag on 8.5-10.x, FP32 where the target disallows FP16."""
    spec = target.tensorrt
    if not getattr(spec, "allow_fp16", False):
        return "fp32 (tensorrt.allow_fp16 is false)"
    major = int(str(spec.tensorrt_version or "10").split(".")[0])
    return "fp16 via ONNX tensor types (TensorRT >= 11)" if major >= 11 else "fp16 via --fp16 (TensorRT 8.5-10.x)"


def quantize_to_qdq(fp32_onnx: Path, out_path: Path, calib_x: np.ndarray, scheme, method: str = "minmax",
                    calib_samples: int = 256, nodes_to_exclude: Iterable[str] = ()) -> Path:
    """One QDQ model with fixed settings, no search (tests, benchmarks, and the TensorRT build tests).

    Args:
        fp32_onnx: the FP32 model.
        out_path: destination (written atomically).
        calib_x: calibration inputs, batch first (the first `calib_samples`).
        scheme: a `QuantScheme` ("auto" reduce_range follows this host's ISA).
        method: "minmax", "entropy" or "percentile" (99.999).
        calib_samples: how many inputs calibrate.
        nodes_to_exclude: node names kept in float.
    Returns:
        out_path.
    """
    import tempfile

    from pipeline.fileio import atomic_path
    from pipeline.int8.calibrate import ActivationStats, CalibCandidate
    from pipeline.int8.qdq import build_qdq, input_name, preprocess
    from pipeline.isa import int8_facts

    rr = int8_facts()["recommended_reduce_range"] if scheme.reduce_range == "auto" else bool(scheme.reduce_range)
    n = min(calib_samples, len(calib_x))
    with tempfile.TemporaryDirectory() as tmp, atomic_path(out_path) as dst:
        pre = preprocess(Path(fp32_onnx), Path(tmp) / "pre.onnx")
        stats = ActivationStats(pre, calib_x[:n], (n,), Path(tmp), input_name(pre))
        cache = Path(tmp) / "ranges.json"
        ort_method = stats.write_cache(CalibCandidate(method, n, 99.999 if method == "percentile" else None), cache)
        build_qdq(pre, dst, cache, ort_method, scheme, rr, nodes_to_exclude)
    return Path(out_path)


def run(inputs: StageInputs, cfg, workdir: Path) -> Artifact:
    """Produce `model_int8.onnx`: `quantize_file` (INT8 search on the validation split, check on the test split),
    or with `quantize.precision: fp16` the verified FP16 conversion.

    With `eval:` the user's function judges every model (search and final check) on the config's own val and
    test datasets, and the head's decode arithmetic (`pipeline.tasks.heads`) stays in float. The head search
    runs when `eval:` is set or the graph has several outputs, i.e. whenever the outputs are not plain class
    logits judged by top-1: there the outputs are decoded values (boxes, scores, masks) whose INT8 steps the
    user's metric sees; a plain classifier's logits come from a Gemm/Conv and yield no exclusions anyway.

    Args:
        inputs: needs `export` (and `prune` for QAT's torch student); the target gives the scheme.
        cfg: `QuantizeConfig`.
        workdir: this stage's folder.
    Returns:
        Artifact with `model` = model_int8.onnx; QuantizeMetrics (with the head exclusions and what scored).
    Raises:
        BudgetExceeded: no candidate (or the FP16 model) met the budget.
    """
    from dataclasses import replace

    d = inputs.data
    fp32 = inputs.artifact("export").path
    from pipeline.stages.quantize_eval import evaluators, head_exclusions_for

    final, search, scored_by = evaluators(inputs, cfg, FINAL_CHECK_SAMPLES)
    heads = head_exclusions_for(fp32, scored_by != "top-1")
    if cfg.precision == "fp16":
        from pipeline.stages.quantize_fp16 import fp16_file

        art = fp16_file(fp32, final, inputs.target, cfg, workdir, inputs.log)
        return Artifact(art.files, art.primary, replace(art.metrics, scored_by=scored_by))
    if heads:
        inputs.log(f"[quantize] head decode kept in float: {', '.join(h.name for h in heads)}")
    # Calibration draws training images only: the held-out splits stay unseen.
    calib, _ = d.sample("train", cfg.calibration_samples, seed=inputs.config.seed)
    torch_model = loader = None
    if cfg.qat.enabled and "prune" in inputs.artifacts:
        from pipeline.stages.common import load_model

        torch_model = load_model(inputs, "student", inputs.artifact("prune").path)
        loader = d.loader("train", 64, shuffle=True, seed=inputs.config.seed)
    art = quantize_file(fp32, calib, final, inputs.target, cfg, workdir, inputs.log,
                        fixed_exclusions=[h.name for h in heads], fixed_reasons={h.name: h.why for h in heads},
                        torch_model=torch_model, train_loader=loader, search_evaluator=search,
                        torch_model_available="prune" in inputs.artifacts,
                        threads=getattr(getattr(inputs.config, "benchmark", None), "threads", None))
    from pipeline.tasks.heads import as_records

    effect = None
    if heads and art.metrics.decision == "int8":
        from pipeline.stages.quantize_eval import head_exclusion_effect

        effect = head_exclusion_effect(fp32, calib, final, art.metrics, heads, inputs.target.runtime == "tensorrt",
                                       workdir)
        inputs.log(f"[quantize] head exclusions: score {effect['score_with'] * 100:.2f}% with, "
                   f"{effect['score_without'] * 100:.2f}% without ({effect['drop_pp_without_vs_with']:+.2f} points)")
    return Artifact(art.files, art.primary, replace(art.metrics, head_exclusions=as_records(heads) or None,
                                                      head_exclusions_effect=effect, scored_by=scored_by))

