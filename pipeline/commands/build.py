"""`edgepipe build MODEL.onnx --target T --out DIR`: the build stage on one ONNX file.

The pipeline's build stage, through the run loop's `run_single_stage`: a TensorRT engine where TensorRT and a
GPU are here (compared with ONNX Runtime on `--parity-data` images when given), otherwise `build_report.json`
with the reason and the commands that build it on the device. ONNX Runtime targets have nothing to build.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.commands.common import add_output_options, emit_manifest


def register(sub) -> None:
    """Add the `build` subcommand."""
    p = sub.add_parser("build", help="build one ONNX model for a target (TensorRT engine, or the device recipe)",
                       description="Build MODEL.onnx for TARGET with the pipeline's build stage; writes OUT/"
                                   "build_report.json (and the engine when built) and OUT/manifest.json.")
    p.add_argument("model", help="the ONNX model (usually quantize's model_int8.onnx)")
    p.add_argument("--target", default="cpu", help="target name from targets/ or a target file (default: cpu)")
    add_output_options(p, "output folder")
    p.add_argument("--parity-data", metavar="NPZ", help="an .npz with x: compare the engine with ONNX Runtime on it")
    p.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    """Run the build stage on MODEL. Returns the exit code."""
    from pipeline.run_folder import make_folder, make_logger, run_single_stage
    from pipeline.stages.base import Artifact, StageInputs
    from pipeline.stages.plan import check_onnx
    from pipeline.targets import load_target

    model = Path(args.model)
    check_onnx(model, "MODEL")
    target = load_target(args.target)
    out = make_folder(args.out, "--out")
    data = _parity_data(Path(args.parity_data)) if args.parity_data else None
    art = Artifact({"model": model}, "model", None, "source")
    inputs = StageInputs({"export": art, "quantize": art}, None, target, data, Path.cwd(), out, make_logger(args.quiet))
    from pipeline.fileio import sha256_file

    info = {"model": {"path": str(model), "sha256": sha256_file(model)},
            "parity_data": str(args.parity_data) if args.parity_data else None}
    manifest = run_single_stage("build", inputs, None, out, info)
    rec = manifest["stages"][0]
    if not args.quiet:
        note = rec["metrics"].get("reason") or rec["metrics"].get("summary") or ""
        print(f"edgepipe build: {rec['status']}: {note}", file=sys.stderr)
    emit_manifest(manifest, args.json)
    return 0


class _Samples:
    """The one thing the build stage reads from data: the first held-out images (`sample("test", n)`)."""

    def __init__(self, x: Any):
        self.x = x

    def sample(self, split: str, n: int, seed: int | None = None) -> tuple[Any, Any]:
        import numpy as np

        x = self.x[:n]
        return x, np.zeros(len(x), np.int64)


def _parity_data(path: Path) -> _Samples:
    import numpy as np

    from pipeline.errors import UserError

    try:
        with np.load(path) as z:
            x = np.ascontiguousarray(z["x"], np.float32)
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"--parity-data {path}: {e} (allowed: an .npz with an array x, NCHW float32)") from None
    return _Samples(x)
