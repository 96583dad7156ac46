"""edgepipe: take a trained PyTorch model to an edge device.

Stages chain together: distill -> prune -> export -> quantize -> build -> benchmark -> report.
Heavy libraries (torch, onnxruntime, tensorrt) are imported inside functions so that importing
any module of this package works on a CPU-only install without them.
"""

from pipeline.errors import UserError
from pipeline.version import __version__

__all__ = ["UserError", "__version__", "run_pipeline"]


def run_pipeline(config_path, target="cpu", out_dir="runs/demo", force=False, quiet=False):
    """Run the whole pipeline from Python; see `pipeline.run_loop.run_pipeline`.

    Args:
        config_path: the pipeline YAML.
        target: a `Target` (from `pipeline.targets.load_target`), or a target name, alias or file.
        out_dir: the run folder.
        force: redo every stage.
        quiet: no progress output.
    Returns:
        The run manifest.
    """
    from pipeline.run_loop import run_pipeline as _run

    return _run(config_path, target=target, out_dir=out_dir, force=force, quiet=quiet)
