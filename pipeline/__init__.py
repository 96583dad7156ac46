"""edgepipe: take a trained PyTorch model to an edge device.

Stages chain together: distill -> prune -> export -> quantize -> build -> benchmark -> report.
Heavy libraries (torch, onnxruntime, tensorrt) are imported inside functions so that importing
any module of this package works on a CPU-only install without them.
"""

__version__ = "0.1.0"

from pipeline.errors import UserError  # noqa: E402,F401


def run_pipeline(config_path, target="cpu", out_dir="runs/demo", force=False, quiet=False):
    """Run the whole pipeline from Python; see `pipeline.runner.run_pipeline`."""
    from pipeline.runner import run_pipeline as _run

    return _run(config_path, target=target, out_dir=out_dir, force=force, quiet=quiet)
