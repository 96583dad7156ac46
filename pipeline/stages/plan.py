"""Which stages have work for a config, and where a stage's input comes from when its upstream stage is skipped.

A run starts at the first stage with work: `distill.enabled`, `prune.enabled` and `quantize.enabled` set to
false, or a `model:` given instead of teacher/student, skip stages, and each skip is recorded with its reason.
A stage whose input stage was skipped takes that input from the closest earlier artifact that stands for the
same thing (`STANDS_IN`): the student before pruning is the distilled one, else the trained student's weights
(`source:student`), else the `model:` itself (train_teacher's checkpoint of it); the model to quantize or ship
is the exported one, else the `model: {onnx: ...}` file (`source:onnx`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.stages.base import Artifact

# what a skipped stage's output is replaced with, in order of preference (names of stages or sources)
STANDS_IN: dict[str, tuple[str, ...]] = {
    "distill": ("source:student", "train_teacher"),
    "prune": ("distill",),
    "export": ("source:onnx",),
    "quantize": ("export",),
}
SOURCE_DIR = "source"  # DIR/source/: the given model as the stages read it (a checkpoint or the ONNX copy)


def skipped_stages(cfg: Any) -> dict[str, str]:
    """The stages with nothing to do for this config, each with the reason recorded in the manifest.

    Args:
        cfg: the `PipelineConfig` (as loaded: `model:` not yet turned into roles).
    Returns:
        {stage name: reason}; stages not listed run.
    """
    onnx = getattr(cfg, "onnx_source", None)
    out: dict[str, str] = {}
    if onnx is not None:
        why = f"model: is the ONNX file {onnx}: nothing to train, distil, prune or export"
        out.update({s: why for s in ("train_teacher", "distill", "prune", "export")})
    elif cfg.model is not None:
        out["distill"] = "model: gives one trained model: no student to distil (it is compressed as it is)"
    elif not cfg.distill.enabled:
        out["distill"] = "distill.enabled: false: the student's weights go on as they are"
    if "prune" not in out and not cfg.prune.enabled:
        out["prune"] = "prune.enabled: false: the model goes on unpruned"
    if not cfg.quantize.enabled:
        out["quantize"] = "quantize.enabled: false: the FP32 ONNX is the final model"
    return out


def resolve(name: str, artifacts: dict[str, Artifact], skipped: dict[str, str]) -> tuple[str, Artifact] | None:
    """The artifact that stands for stage `name`'s output: its own, or a stand-in's when it was skipped.

    Args:
        name: a stage (or source) name.
        artifacts: every artifact so far, by stage name, plus the sources (`source:student`, `source:onnx`).
        skipped: `skipped_stages`' result.
    Returns:
        (the name it came from, the artifact), or None when nothing stands for it.
    """
    if name in artifacts:
        return name, artifacts[name]
    if name not in skipped and not name.startswith("source:"):
        return None
    for alt in STANDS_IN.get(name, ()):
        found = resolve(alt, artifacts, skipped)
        if found is not None:
            return found
    return None


def stage_inputs(needs: tuple[str, ...], artifacts: dict[str, Artifact],
                 skipped: dict[str, str]) -> tuple[dict[str, Artifact], dict[str, str]]:
    """A stage's input artifacts, with stand-ins for skipped stages (inputs nothing stands for are left out).

    Args:
        needs: the stage's `needs`.
        artifacts: every artifact so far, plus the sources.
        skipped: `skipped_stages`' result.
    Returns:
        ({need: artifact}, {need: the stage or source it came from, for needs that were stood in for}).
    """
    inputs, came_from = {}, {}
    for n in needs:
        found = resolve(n, artifacts, skipped)
        if found is None:
            continue
        inputs[n] = found[1]
        if found[0] != n:
            came_from[n] = found[0]
    return inputs, came_from


def make_sources(cfg: Any, base: Path, data: Any, out: Path, skipped: dict[str, str]) -> dict[str, Artifact]:
    """The given models as artifacts the stages can read, written under `DIR/source/` when they changed.

    - `source:onnx`: a copy of `model: {onnx: file}` (so the run folder holds everything the manifest names).
    - `source:student`: an edgepipe checkpoint of `student.weights`, when distillation is skipped for
      teacher:/student: (prune and export read checkpoints). A PyTorch `model:` needs none: train_teacher
      checkpoints it.

    Args:
        cfg: the config with roles filled in (`PipelineConfig.roles()`).
        base: the config's folder.
        data: the run's `Data` (classes and channels build the model).
        out: the run folder.
        skipped: `skipped_stages`' result.
    Returns:
        {source name: Artifact} (status "source", no metrics).
    """
    from pipeline.config import resolve as resolve_path
    from pipeline.fileio import atomic_path, sha256_file

    folder = out / SOURCE_DIR
    sources: dict[str, Artifact] = {}
    onnx = getattr(cfg, "onnx_source", None)
    if onnx is not None:
        src, dest = resolve_path(base, onnx), folder / "model_fp32.onnx"
        check_onnx(src, "model.onnx")
        if not dest.is_file() or sha256_file(dest) != sha256_file(src):
            import shutil

            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dest) as tmp:
                shutil.copyfile(src, tmp)
        sources["source:onnx"] = Artifact({"model": dest}, "model", None, "source")
    elif "distill" in skipped and cfg.model is None and cfg.student is not None and cfg.student.weights:
        sources["source:student"] = _student_checkpoint(cfg, base, data, folder / "student.pt")
    return sources


def _student_checkpoint(cfg: Any, base: Path, data: Any, dest: Path) -> Artifact:
    """`student.weights` as an edgepipe checkpoint (rewritten only when the weights file changed)."""
    from pipeline.config import resolve as resolve_path
    from pipeline.fileio import read_json, sha256_file, write_json

    weights = resolve_path(base, cfg.student.weights)
    stamp = dest.with_suffix(".json")
    sha = sha256_file(weights)
    try:
        fresh = dest.is_file() and read_json(stamp, "source stamp").get("weights_sha256") == sha
    except Exception:  # a missing or damaged stamp: write the checkpoint again
        fresh = False
    if not fresh:
        from pipeline.models import build_model, load_weights
        from pipeline.models.checkpoint import save_checkpoint

        model = build_model(cfg.student, data.num_classes, data.input_shape[0], base, "student")
        load_weights(model, weights, "student")
        save_checkpoint(model, dest, {"role": "student", "source": str(cfg.student.weights)})
        write_json(stamp, {"weights_sha256": sha, "weights": str(cfg.student.weights)})
    return Artifact({"model": dest}, "model", None, "source")


def check_onnx(path: Path, field: str) -> None:
    """Check that `path` is a readable ONNX model.

    Args:
        path: the file.
        field: the config field or command-line argument that named it, for the message.
    Raises:
        UserError: missing, or not a valid ONNX model, naming `field` and the path.
    """
    from pipeline.errors import UserError

    if not Path(path).is_file():
        raise UserError(f"{field} = {str(path)!r}: file not found (allowed: an .onnx model file)")
    try:
        import onnx

        onnx.checker.check_model(str(path))
    except Exception as e:
        raise UserError(f"{field} = {str(path)!r}: not a valid ONNX model ({str(e).splitlines()[0][:200]})") \
            from None
