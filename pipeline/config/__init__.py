"""The pipeline config: one YAML file validated into frozen, typed sections.

Every section has defaults for every field, so `teacher`, `student` and `data` are all a config
needs. Unknown keys are errors that list the allowed keys; values outside their range say what is
allowed. Relative paths are relative to the config file's folder, which is also put on the import
path so a `models.py` beside the config can provide `factory: "models:make_teacher"`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.config.data import (
    BUILTIN_DATA,
    BuiltinData,
    DataSpec,
    FactoryData,
    FileData,
    PreprocessSpec,
)
from pipeline.config.models import (
    BUILTIN_MODELS,
    BuiltinModel,
    FactoryModel,
    ModelSpec,
    OnnxModel,
    SourceSpec,
)
from pipeline.config.stages import (
    PRUNE_TARGET_KINDS,
    BenchmarkConfig,
    DistillConfig,
    ExportConfig,
    FeatureHint,
    PruneConfig,
    PruneTarget,
    QatConfig,
    QuantizeConfig,
    TrainTeacherConfig,
)
from pipeline.errors import UserError
from pipeline.validation import load_mapping, validate_model

_STRICT = ConfigDict(extra="forbid", frozen=True)

DEVICES = "auto, cpu, cuda, cuda:N"


class PipelineConfig(BaseModel):
    """The whole pipeline config file."""

    model_config = _STRICT
    name: str = "edgepipe-run"
    seed: int = 0
    device: str = "auto"  # where training runs: auto (CUDA when present) | cpu | cuda | cuda:N
    preprocess: PreprocessSpec | Literal["imagenet"] | None = None  # for image files (folders, CSV lists)
    augment: Literal["shift", "standard", "none"] | None = None  # default: shift (digits, npz), standard (images)
    skip_corrupt: bool = False  # leave unreadable image files out (counted in the manifest) instead of failing
    workers: int | None = Field(None, ge=0)  # DataLoader worker processes (default: min(4, CPUs); 0 for arrays)
    num_classes: int | None = Field(None, ge=2)  # default: inferred from the labels
    teacher: ModelSpec | None = None  # required (with student) unless `model:` is given
    student: ModelSpec | None = None
    model: SourceSpec | None = None  # a trained model to compress instead of teacher/student (see `roles`)
    # The accuracy metric, from the user's code: `fn(predict, data) -> float` in [0, 1], higher is better, where
    # predict(x) -> list of numpy outputs and data is the held-out split; budgets are in points of score x 100.
    # None: the built-in top-1 of a single-logits classifier. Imported like factories (config folder on sys.path).
    eval: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    data: DataSpec
    train_teacher: TrainTeacherConfig = TrainTeacherConfig()
    distill: DistillConfig = DistillConfig()
    prune: PruneConfig = PruneConfig()
    export: ExportConfig = ExportConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        import re

        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError(f"allowed: {DEVICES}")
        return v

    @property
    def onnx_source(self) -> str | None:
        """The `model: {onnx: path}` file as written in the config, or None."""
        return getattr(self.model, "onnx", None)

    def roles(self) -> PipelineConfig:
        """The config as the stages see it: with a PyTorch `model:`, it is both the teacher (the FP32 reference
        a fine-tune distils from) and the student (the model compressed); with an ONNX `model:`, neither exists.

        Returns:
            A copy with `teacher`/`student` filled in (self when `model:` is absent).
        """
        if self.model is None or self.onnx_source is not None:
            return self
        # model_copy skips validation on purpose: `model:` next to teacher/student is refused only as typed
        return self.model_copy(update={"teacher": self.model, "student": self.model})


def load_config(path: str | os.PathLike) -> tuple[PipelineConfig, Path]:
    """Load and validate a pipeline config.

    Args:
        path: the YAML (or TOML) config file.
    Returns:
        (config, folder of the config file). Relative paths in the config are relative to that folder.
    Raises:
        UserError: missing file, parse error, unknown key, bad value, missing data/weights file.
    """
    p = Path(path)
    data = load_mapping(p, "pipeline config")
    for key in ("teacher", "student", "model", "data"):
        if key in data and not isinstance(data[key], dict):
            raise UserError(f"{p}: {key} must be a mapping such as {{builtin: ...}}, got {data[key]!r}")
        if isinstance(data.get(key), dict):
            _check_union_keys(p, key, data[key])
    cfg = validate_model(PipelineConfig, data, str(p))
    base = p.resolve().parent
    _check_roles(cfg, p)
    _check_files(cfg, base, p)
    return cfg, base


def _check_roles(cfg: PipelineConfig, path: Path) -> None:
    """Which models the config gives must make a pipeline: teacher + student, or one trained `model:`."""
    onnx = cfg.onnx_source is not None
    if cfg.model is not None:
        given = [k for k in ("teacher", "student") if getattr(cfg, k) is not None]
        if given:
            raise UserError(f"{path}: model: and {given[0]}: are both given (allowed: model: alone, a trained model "
                            "to compress, or teacher: and student: to distil one into the other)")
        if not onnx and cfg.model.weights is None:
            raise UserError(f"{path}: model.weights is required: model: is a trained model (allowed: a state_dict "
                            ".pt or .safetensors; to train one, give teacher: and student: instead)")
        if cfg.distill.enabled and "enabled" in cfg.distill.model_fields_set:
            raise UserError(f"{path}: distill.enabled = true needs teacher: and student:, but the config gives one "
                            "trained model: (allowed: distill.enabled: false, or teacher:/student: instead of model:)")
        if onnx and cfg.prune.enabled and "enabled" in cfg.prune.model_fields_set:
            raise UserError(f"{path}: prune.enabled = true needs a PyTorch model, but model: is the ONNX file "
                            f"{cfg.onnx_source!r} (allowed: prune.enabled: false, or model: {{factory: ..., "
                            "weights: ...}})")
        return
    missing = [k for k in ("teacher", "student") if getattr(cfg, k) is None]
    if missing:
        raise UserError(f"{path}: missing required key '{missing[0]}': give teacher: and student: (to distil), "
                        "or model: (a trained model to compress: {factory: module:function, weights: W}, "
                        "{builtin: NAME, weights: W} or {onnx: file.onnx})")
    if not cfg.distill.enabled and cfg.student.weights is None:
        raise UserError(f"{path}: distill.enabled = false needs student.weights (a trained student), or the trained "
                        "model as model: instead of teacher:/student:")


def _check_union_keys(path: Path, key: str, section: dict) -> None:
    # Pick the union member from its tag so errors speak of one shape, not every alternative.
    if key == "data":
        if "builtin" in section:
            allowed, kind = BuiltinData.model_fields, "builtin data"
            if section["builtin"] not in BUILTIN_DATA:
                raise UserError(f"{path}: data.builtin = {section['builtin']!r}: allowed: {', '.join(BUILTIN_DATA)}")
        elif "factory" in section:
            allowed, kind = FactoryData.model_fields, "factory data"
        elif "train" in section or "root" in section:
            allowed, kind = FileData.model_fields, "file data"
        else:
            raise UserError(
                f"{path}: data needs 'builtin: digits', 'train:'/'val:' paths (image folders, .csv or .npz), "
                f"'root:' with 'split:', or 'factory: module:function'; got keys {sorted(section)}"
            )
    else:
        if "builtin" in section:
            allowed, kind = BuiltinModel.model_fields, "builtin model"
            if section["builtin"] not in BUILTIN_MODELS:
                raise UserError(
                    f"{path}: {key}.builtin = {section['builtin']!r}: allowed: {', '.join(BUILTIN_MODELS)}"
                )
        elif "factory" in section:
            allowed, kind = FactoryModel.model_fields, "factory model"
        elif key == "model" and "onnx" in section:
            allowed, kind = OnnxModel.model_fields, "ONNX model"
        else:
            onnx = " or 'onnx: file.onnx'" if key == "model" else ""
            raise UserError(
                f"{path}: {key} needs 'builtin: NAME' ({', '.join(BUILTIN_MODELS)}) or 'factory: module:function'"
                f"{onnx}, got keys {sorted(section)}"
            )
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise UserError(
            f"{path}: unknown key '{key}.{unknown[0]}' for a {kind} (allowed: {', '.join(sorted(allowed))})"
        )


def resolve(base: Path, rel: str) -> Path:
    """Resolve a config path relative to the config file's folder."""
    p = Path(os.path.expanduser(rel))
    return p if p.is_absolute() else base / p


def _check_files(cfg: PipelineConfig, base: Path, cfg_path: Path) -> None:
    checks: list[tuple[str, str | None]] = [
        ("teacher.weights", getattr(cfg.teacher, "weights", None)),
        ("student.weights", getattr(cfg.student, "weights", None)),
        ("model.weights", getattr(cfg.model, "weights", None)),
        ("model.onnx", cfg.onnx_source),
    ]
    for field, rel in checks:
        if rel is not None and not resolve(base, rel).is_file():
            raise UserError(f"{cfg_path}: {field} = {rel!r}: file not found: {resolve(base, rel)}")
    if isinstance(cfg.data, FileData):
        for k in ("train", "val", "test", "unlabeled", "root"):
            rel = getattr(cfg.data, k)
            if rel is not None and not resolve(base, rel).exists():
                raise UserError(f"{cfg_path}: data.{k} = {rel!r}: not found: {resolve(base, rel)} (allowed: an "
                                "image folder, a .csv list or an .npz file)")


__all__ = [
    "BUILTIN_DATA", "BUILTIN_MODELS", "PRUNE_TARGET_KINDS", "BenchmarkConfig", "BuiltinData", "BuiltinModel",
    "DataSpec", "DistillConfig", "ExportConfig", "FactoryData", "FactoryModel", "FeatureHint", "FileData",
    "ModelSpec", "OnnxModel", "PipelineConfig", "PreprocessSpec", "PruneConfig", "PruneTarget", "QatConfig",
    "QuantizeConfig", "SourceSpec", "TrainTeacherConfig", "load_config", "resolve",
]
