"""What the quantize stage judges with: its evaluators (top-1, or the user's `eval:`) and a detector's head.

Split from `quantize.py` to keep that file readable; `quantize.run` is the only caller.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.stages.base import StageInputs


def evaluators(inputs: StageInputs, cfg, final_samples: int) -> tuple:
    """The quantize stage's evaluators.

    Top-1 on bounded array samples for classification; with `eval:` the user's function on the datasets the
    config gives (its own ground truth, e.g. boxes), wrapped so a bad return value is a UserError naming it.

    Args:
        inputs: the stage's inputs (data, config.eval, config_dir, seed).
        cfg: `QuantizeConfig` (search_samples).
        final_samples: the most held-out images of the top-1 final check.
    Returns:
        (final-check evaluator on the test split, search evaluator on val or None, what scores: "top-1" or
        the eval spec).
    """
    d = inputs.data
    has_val = d.has("val") and d.count("val") > 0
    spec = getattr(inputs.config, "eval", None)
    if spec:
        from pipeline.int8.evaluate import FunctionEvaluator
        from pipeline.tasks.user_eval import eval_split, load_eval, score

        fn = load_eval(spec, inputs.config_dir)

        def user(predict, data):
            return score(fn, predict, data)

        search = FunctionEvaluator(user, eval_split(d, "val")) if has_val else None
        return FunctionEvaluator(user, eval_split(d, "test")), search, spec
    from pipeline.int8.evaluate import ClassificationEvaluator

    x_test, y_test = d.sample("test", min(final_samples, d.count("test")))
    search = None
    if has_val:
        x_val, y_val = d.sample("val", min(cfg.search_samples, d.count("val")), seed=inputs.config.seed)
        search = ClassificationEvaluator(x_val, y_val)
    return ClassificationEvaluator(x_test, y_test), search, "top-1"


def head_exclusions_for(fp32: Path, user_scored: bool) -> list:
    """The head's decode nodes kept in float, when the outputs are not class logits judged by top-1.

    Args:
        fp32: the FP32 ONNX.
        user_scored: `eval:` is set (the outputs are whatever the task decodes).
    Returns:
        `pipeline.tasks.heads.HeadNode`s with names; [] for a single-output model judged by top-1.
    """
    import onnx

    from pipeline.tasks.heads import head_exclusions

    outputs = onnx.load(str(fp32), load_external_data=False).graph.output
    if not user_scored and len(outputs) < 2:
        return []
    return [h for h in head_exclusions(fp32) if h.name]


def head_exclusion_effect(fp32: Path, calib_x, evaluator, metrics, heads: list, fake_quant: bool,
                          workdir: Path) -> dict:
    """What the head exclusions are worth: the same plain INT8 recipe with and without them, on the final check.

    Both models use the shipped model's calibration method, sample count, scheme and other float layers (no
    equalization or bias correction, so the two differ only in the head nodes); the shipped model's own score
    is in the metrics next to it.

    Args:
        fp32: the FP32 ONNX.
        calib_x: the calibration images the search used.
        evaluator: the final-check evaluator (its FP32 reference already bound).
        metrics: the shipped model's `QuantizeMetrics` (scheme, method, calibration_samples, excluded_nodes).
        heads: the head nodes kept in float.
        fake_quant: score as fake-quant (TensorRT targets), as the search did.
        workdir: scratch folder (removed).
    Returns:
        {"score_with", "score_without", "drop_pp_without_vs_with"} (scores in [0, 1]).
    """
    import shutil

    from pipeline.int8.qdq import RunSpec, predictor
    from pipeline.stages.quantize import quantize_to_qdq

    names = {h.name for h in heads}
    others = [n for n in metrics.excluded_nodes if n not in names]
    method = metrics.method if metrics.method in ("minmax", "entropy", "percentile") else "minmax"
    scratch = workdir / "heads_effect"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        evaluator.bind_reference(predictor(fp32, RunSpec()))  # a top-1 evaluator compares with FP32
        got = {}
        for label, exclude in (("with", sorted(set(others) | names)), ("without", others)):
            path = quantize_to_qdq(fp32, scratch / f"{label}.onnx", calib_x, metrics.scheme, method,
                                   metrics.calibration_samples, exclude)
            got[label] = evaluator.evaluate(predictor(path, RunSpec(fake_quant=fake_quant))).score
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"score_with": round(got["with"], 5), "score_without": round(got["without"], 5),
            "drop_pp_without_vs_with": round((got["with"] - got["without"]) * 100, 2)}
