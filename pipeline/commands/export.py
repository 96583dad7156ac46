"""`edgepipe export`: the export stage, from a pipeline config or from one PyTorch model on files.

- `--config C`: the pipeline up to and including export (the same run folder, cache and manifest as
  `edgepipe run`, stopped after export; skipped stages are skipped as in a full run).
- `--model module:function --weights W --input-shape 1,3,224,224`: one trained model, no data. The export
  stage compares ONNX with PyTorch on seeded random inputs of that shape; its "accuracy" is then top-1
  agreement with PyTorch (the labels are PyTorch's own top-1), which the manifest says.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.commands.common import add_output_options, emit_manifest

RANDOM_IMAGES = 64  # seeded random inputs the ONNX is compared with PyTorch on when no data is given


def register(sub) -> None:
    """Add the `export` subcommand."""
    p = sub.add_parser("export", help="export a model to ONNX (the pipeline's export stage)",
                       description="Export to ONNX with the pipeline's export stage: from a pipeline config "
                                   "(--config), or one model (--model, --weights, --input-shape).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="pipeline YAML: run its stages up to export")
    src.add_argument("--model", metavar="MODULE:FUNCTION", help="a factory returning the nn.Module")
    p.add_argument("--weights", help="the model's state_dict (.pt or .safetensors); required with --model")
    p.add_argument("--input-shape", help="N,C,H,W of one input, e.g. 1,3,224,224; required with --model")
    p.add_argument("--num-classes", type=int, help="passed to the factory when it takes num_classes")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--target", default="cpu", help="with --config: the target (default: cpu)")
    add_output_options(p, "output folder (with --config: the run folder)")
    p.add_argument("--force", action="store_true", help="with --config: redo every stage even if cached")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    """Run export from a config or on one model. Returns the exit code."""
    from pipeline.errors import UserError

    if args.config:
        from pipeline.run_loop import run_pipeline

        manifest = run_pipeline(args.config, target=args.target, out_dir=args.out, force=args.force,
                                quiet=args.quiet, until="export")
    else:
        missing = [f for f, v in (("--weights", args.weights), ("--input-shape", args.input_shape)) if not v]
        if missing:
            raise UserError(f"edgepipe export --model needs {' and '.join(missing)} (a trained model's weights, "
                            "and the input shape N,C,H,W)")
        manifest = _export_model(args)
    emit_manifest(manifest, args.json)
    return 0


def _export_model(args: argparse.Namespace) -> dict:
    """The export stage on `--model` with `--weights`, compared with PyTorch on seeded random inputs."""
    from pipeline.config import PipelineConfig
    from pipeline.errors import UserError
    from pipeline.models.checkpoint import save_checkpoint
    from pipeline.run_folder import make_folder, make_logger, run_single_stage
    from pipeline.stages.base import Artifact, StageInputs
    from pipeline.targets import load_target

    shape = _shape(args.input_shape)
    weights = Path(args.weights)
    if not weights.is_file():
        raise UserError(f"--weights {weights}: file not found (allowed: a state_dict .pt or .safetensors)")
    out = make_folder(args.out, "--out")
    base = Path.cwd()
    doc = {"name": f"export {args.model}", "data": {"builtin": "digits"}, "export": {"opset": args.opset},
           "model": {"factory": args.model, "weights": str(weights), "kwargs": _kwargs(args, base, shape)}}
    try:
        cfg = PipelineConfig.model_validate(doc).roles()
    except Exception as e:
        raise UserError(f"--model {args.model!r}: {str(e).splitlines()[-1].strip()} (allowed: module:function, "
                        "the module importable from this folder)") from None
    model = _load(cfg.model, weights, base, shape)
    data = _random_data(model, shape)
    ckpt = save_checkpoint(model, out / ".work" / "source" / "model.pt", {"role": "model"})
    art = Artifact({"model": ckpt}, "model", None, "source")
    inputs = StageInputs({"train_teacher": art, "prune": art}, cfg, load_target(args.target), data, base, out,
                         make_logger(args.quiet))
    info = {"model": {"factory": args.model, "weights": str(weights), "input_shape": list(shape)},
            "data": f"{RANDOM_IMAGES} seeded random inputs (no data given): accuracy is top-1 agreement with PyTorch"}
    return run_single_stage("export", inputs, cfg.export, out, info)


def _shape(text: str) -> tuple[int, ...]:
    from pipeline.errors import UserError

    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise UserError(f"--input-shape {text!r}: allowed: N,C,H,W positive integers, e.g. 1,3,224,224")
    return shape


def _kwargs(args: argparse.Namespace, base: Path, shape: tuple[int, ...]) -> dict:
    """The factory's num_classes/in_channels: --num-classes and the input's channels, or the factory's defaults."""
    from pipeline.user_code import import_user_module

    mod_name, fn_name = args.model.split(":") if ":" in args.model else (args.model, "")
    fn = getattr(import_user_module(mod_name, base, args.model, "--model"), fn_name, None)
    params = inspect.signature(fn).parameters if callable(fn) else {}
    kwargs: dict[str, Any] = {}
    if "in_channels" in params:
        kwargs["in_channels"] = shape[1]
    if "num_classes" in params:
        default = params["num_classes"].default
        if args.num_classes is None and default is inspect.Parameter.empty:
            from pipeline.errors import UserError

            raise UserError(f"--model {args.model}: the factory takes num_classes: give --num-classes")
        kwargs["num_classes"] = args.num_classes if args.num_classes is not None else default
    return kwargs


def _load(spec: Any, weights: Path, base: Path, shape: tuple[int, ...]) -> Any:
    from pipeline.models import build_model, load_weights

    model = build_model(spec, spec.kwargs.get("num_classes", 0), shape[1], base, "model")
    load_weights(model, weights, "model")
    return model.eval()


def _random_data(model: Any, shape: tuple[int, ...]) -> Any:
    """Seeded random inputs, labelled with the model's own top-1 (so accuracy reads as agreement with PyTorch)."""
    import torch

    from pipeline.data.arrays import DataSplits
    from pipeline.data.load import from_arrays
    from pipeline.errors import UserError

    x = np.random.default_rng(0).normal(0, 1, (RANDOM_IMAGES, *shape[1:])).astype(np.float32)
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(x))
    except Exception as e:
        raise UserError(f"--input-shape {','.join(map(str, shape))}: the model cannot run on it: "
                        f"{str(e).splitlines()[0][:200]}") from None
    first = out if isinstance(out, torch.Tensor) else next(iter(out.values() if isinstance(out, dict) else out))
    logits = first.reshape(len(x), -1).numpy()
    y = logits.argmax(1).astype(np.int64)
    d = DataSplits(x, y, x, y, x, y, logits.shape[1], [0.0], [1.0], "seeded random inputs")
    return from_arrays(d, "none", d.digest(), kind="npz")
