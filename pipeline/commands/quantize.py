"""`edgepipe quantize MODEL.onnx --calib DATA --target T --out DIR`: the quantize stage on one ONNX file.

The calibration data is read the way `data:` reads a split (an .npz, an image folder, a .csv list); a
held-out part of it (`--holdout`) never calibrates and measures the INT8 model. With labels, the budget is
the accuracy drop; without labels and without `--eval`, the labels are the FP32 model's own top-1, so the
accuracy is top-1 agreement with FP32 (`--min-agreement`). The stage itself is the pipeline's quantize stage,
fed through the run loop's `run_single_stage`: the same code, checks, records and exit codes
(0 done, 1 budget missed, 2 user error).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.commands.common import add_output_options, emit_manifest


def register(sub) -> None:
    """Add the `quantize` subcommand."""
    p = sub.add_parser("quantize", help="quantize one ONNX model to INT8 for a target (the pipeline's stage)",
                       description="Quantize MODEL.onnx to INT8 QDQ for TARGET with the pipeline's quantize stage; "
                                   "writes OUT/model_int8.onnx and OUT/manifest.json.")
    p.add_argument("model", help="the FP32 ONNX model (first input NCHW float32, dynamic batch)")
    p.add_argument("--calib", required=True, help="calibration data: an .npz (x, optional y), an image folder or a "
                                                  ".csv list, as data: takes")
    p.add_argument("--target", default="cpu", help="target name from targets/ or a target file (default: cpu)")
    add_output_options(p, "output folder")
    p.add_argument("--eval", metavar="MODULE:FUNCTION", help="your evaluation fn(predict, data) -> float in [0, 1]")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--max-accuracy-drop", type=float, metavar="P",
                        help="most points of accuracy (or eval score x 100) INT8 may lose (default 1.0)")
    budget.add_argument("--min-agreement", type=float, metavar="F",
                        help="least top-1 agreement with the FP32 model on the held-out images, in [0, 1]")
    p.add_argument("--method", choices=("auto", "minmax", "entropy", "percentile"), default="auto",
                   help="calibration: auto measures MinMax, entropy and percentile and keeps the best (default)")
    p.add_argument("--precision", choices=("int8", "fp16"), default="int8",
                   help="int8: the INT8 search (default); fp16: an FP16 model, checked against the same budget")
    p.add_argument("--calibration-samples", type=int, default=256, help="images that calibrate (default 256)")
    p.add_argument("--holdout", type=float, default=0.25,
                   help="fraction of --calib held out to measure the INT8 model (default 0.25)")
    p.add_argument("--preprocess", default=None,
                   help="for image files: 'imagenet' or a JSON object like data's preprocess: section")
    p.add_argument("--seed", type=int, default=0, help="which images are held out (default 0)")
    p.set_defaults(func=_quantize)


def _quantize(args: argparse.Namespace) -> int:
    """Run the quantize stage on MODEL.onnx. Returns the exit code (a missed budget raises BudgetExceeded)."""
    from pipeline.errors import UserError
    from pipeline.run_folder import make_folder, make_logger, run_single_stage
    from pipeline.stages.base import Artifact, StageInputs
    from pipeline.stages.plan import check_onnx
    from pipeline.targets import load_target

    model = Path(args.model)
    check_onnx(model, "MODEL")
    if not 0 < args.holdout < 1:
        raise UserError(f"--holdout = {args.holdout}: allowed: a fraction between 0 and 1 (e.g. 0.25)")
    if args.min_agreement is not None and not 0 <= args.min_agreement <= 1:
        raise UserError(f"--min-agreement = {args.min_agreement}: allowed: a fraction in [0, 1]")
    if args.calibration_samples < 1:
        raise UserError(f"--calibration-samples = {args.calibration_samples}: allowed: an integer >= 1")
    target = load_target(args.target)
    out = make_folder(args.out, "--out")
    log = make_logger(args.quiet)
    x, y = load_calibration(Path(args.calib), args.preprocess, args.calibration_samples, args.holdout,
                            out / ".cache")
    data, labels = _split(model, x, y, args.holdout, args.seed, args.calib)
    cfg = _config(model, args, labels)
    inputs = StageInputs({"export": Artifact({"model": model}, "model", None, "source")}, cfg, target, data,
                         Path.cwd(), out, log)
    info = {"model": {"path": str(model), "sha256": _sha(model)},
            "calibration": {"path": str(args.calib), "calibration_images": int(data.count("train")),
                            "held_out_images": int(data.count("test")), "labels": labels,
                            "budget": _budget_text(cfg, labels)}}
    # ONNX Runtime's calibrators print progress to stdout, which `--json -` keeps for the manifest
    with contextlib.redirect_stdout(sys.stderr):
        manifest = run_single_stage("quantize", inputs, cfg.quantize, out, info)
    emit_manifest(manifest, args.json)
    return 0


def load_calibration(path: Path, preprocess: str | None, calib: int, holdout: float,
                     cache_dir: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read at most enough images for `calib` calibration images plus the held-out part, as `data:` reads a split.

    Args:
        path: an .npz (`x`, optional `y`), an image folder (class subfolders, or flat) or a .csv list.
        preprocess: "imagenet", a JSON preprocess section, or None (required for image files).
        calib: calibration images wanted.
        holdout: fraction of what is read that is held out.
        cache_dir: where compressed npz members are extracted.
    Returns:
        (x float32 NCHW, y int64 or None when the data has no labels).
    Raises:
        UserError: a missing or unreadable path, no images, image files without a preprocess.
    """
    from pipeline.data.load import open_data_file
    from pipeline.errors import UserError

    ds = open_data_file(path, "--calib", _preprocess(preprocess), cache_dir)
    n = min(len(ds), int(np.ceil(calib / (1 - holdout))))
    if n < 2:
        raise UserError(f"--calib {path}: {len(ds)} image(s); need at least 2 (some calibrate, some are held out)")
    items = [ds[i] for i in range(n)]
    x = np.stack([np.asarray(it[0], np.float32) for it in items])
    y = np.asarray([int(it[1]) for it in items], np.int64)
    return x, (None if (y < 0).any() else y)


def _preprocess(text: str | None) -> Any:
    from pipeline.config.data import PreprocessSpec
    from pipeline.errors import UserError

    if text is None or text == "imagenet":
        return text
    try:
        return PreprocessSpec.model_validate(json.loads(text))
    except Exception as e:
        raise UserError(f"--preprocess {text!r}: {str(e).splitlines()[0]} (allowed: imagenet, or a JSON object "
                        'such as {"resize": 256, "crop": 224})') from None


def _split(model: Path, x: np.ndarray, y: np.ndarray | None, holdout: float, seed: int,
           source: str) -> tuple[Any, str]:
    """Calibration and held-out images as the stage's `Data` (train = calibration, val = test = held out).

    Without labels, the held-out labels are the FP32 model's top-1: the stage's accuracy is then agreement.
    """
    from pipeline.data.arrays import DataSplits
    from pipeline.data.load import from_arrays
    from pipeline.errors import UserError
    from pipeline.onnx_utils import ort_logits

    idx = np.random.default_rng(seed).permutation(len(x))
    k = max(1, int(round(len(x) * holdout)))
    held, cal = idx[:k], idx[k:]
    try:
        logits = ort_logits(model, x)
    except Exception as e:
        raise UserError(f"--calib {source}: images of shape {list(x.shape[1:])} do not fit {model}: "
                        f"{str(e).splitlines()[0][:200]}") from None
    labels = "given"
    if y is None:
        y, labels = logits.reshape(len(x), -1).argmax(1).astype(np.int64), "fp32 top-1"
    classes = max(int(y.max()) + 1, logits.reshape(len(x), -1).shape[1])
    d = DataSplits(x[cal], y[cal], x[held], y[held], x[held], y[held], classes, [0.0], [1.0],
                   f"calibration data {source}")
    return from_arrays(d, "none", d.digest(), kind="npz", seed=seed), labels


def _config(model: Path, args: argparse.Namespace, labels: str) -> Any:
    """The pipeline config the quantize stage reads: `model: {onnx}`, the budget and the calibration settings."""
    from pipeline.config import PipelineConfig
    from pipeline.errors import UserError

    q: dict[str, Any] = {"method": args.method, "calibration_samples": args.calibration_samples,
                         "precision": args.precision}
    if args.max_accuracy_drop is not None:
        if args.max_accuracy_drop < 0:
            raise UserError(f"--max-accuracy-drop = {args.max_accuracy_drop}: allowed: points >= 0")
        q["max_accuracy_drop"] = args.max_accuracy_drop
    if args.min_agreement is not None:
        q["min_top1_agreement"] = args.min_agreement
        if labels == "fp32 top-1":  # accuracy is agreement here: the drop is the disagreement, in points
            q["max_accuracy_drop"] = round((1 - args.min_agreement) * 100, 6)
    doc: dict[str, Any] = {"name": f"quantize {model.name}", "model": {"onnx": str(model)},
                           "data": {"train": args.calib, "val": args.calib}, "quantize": q}
    if args.eval:
        doc["eval"] = args.eval
    try:
        return PipelineConfig.model_validate(doc)
    except Exception as e:
        raise UserError(f"edgepipe quantize: {str(e).splitlines()[0]}: {str(e).splitlines()[-1].strip()}") from None


def _budget_text(cfg: Any, labels: str) -> str:
    q = cfg.quantize
    what = "top-1 agreement with FP32" if labels == "fp32 top-1" else "accuracy"
    if getattr(cfg, "eval", None):
        what = f"score of {cfg.eval}"
    return f"{what}: drop <= {q.max_accuracy_drop} points, top-1 agreement >= {q.min_top1_agreement}"


def _sha(path: Path) -> str:
    from pipeline.fileio import sha256_file

    return sha256_file(path)
