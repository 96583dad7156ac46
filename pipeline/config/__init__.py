"""The pipeline config: one YAML file validated into frozen, typed sections.

Every section has defaults for every field, so `teacher`, `student` and `data` are all a config
needs. Unknown keys are errors that list the allowed keys; values outside their range say what is
allowed. Relative paths are relative to the config file's folder, which is also put on the import
path so a `models.py` beside the config can provide `factory: "models:make_teacher"`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from pipeline.config.data import (
    BUILTIN_DATA,
    BuiltinData,
    DataSpec,
    FactoryData,
    FileData,
    PreprocessSpec,
)
from pipeline.errors import UserError
from pipeline.validation import UNION_TAG, load_mapping, validate_model

_STRICT = ConfigDict(extra="forbid", frozen=True)
BUILTIN_MODELS = ("resnet_teacher", "mobilenetv2_student", "resnet50", "mobilenet_v2")


class BuiltinModel(BaseModel):
    """A model shipped with edgepipe: the digits demo's `resnet_teacher` and `mobilenetv2_student`, and
    torchvision-compatible `resnet50` and `mobilenet_v2` (torchvision checkpoints load as `weights:`)."""

    model_config = _STRICT
    builtin: Literal["resnet_teacher", "mobilenetv2_student", "resnet50", "mobilenet_v2"]
    weights: str | None = None  # a state_dict (.pt loaded with weights_only=True, or .safetensors)
    width: float = Field(1.0, gt=0, le=4)  # channel multiplier (mobilenet_v2's width_mult; resnet50: 1 only)


class FactoryModel(BaseModel):
    """A user model: `module:function` returning an nn.Module, given `num_classes`/`in_channels` if it takes them."""

    model_config = _STRICT
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    weights: str | None = None
    kwargs: dict = {}


def _model_kind(v: Any) -> str:
    factory = isinstance(v, FactoryModel) or (isinstance(v, dict) and "factory" in v and "builtin" not in v)
    return UNION_TAG + ("factory" if factory else "builtin")


# The member is chosen by its key (`builtin:` or `factory:`), so a bad value is reported for that shape
# alone, not once per alternative; validation.py drops the tag from error locations.
ModelSpec = Annotated[
    Annotated[BuiltinModel, Tag(UNION_TAG + "builtin")] | Annotated[FactoryModel, Tag(UNION_TAG + "factory")],
    Discriminator(_model_kind),
]


class TrainTeacherConfig(BaseModel):
    """Training a teacher when none with weights is given."""

    model_config = _STRICT
    epochs: int = Field(12, ge=1, le=1000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.003, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    patience: int | None = Field(None, ge=1)  # stop after this many epochs without a better val accuracy


class FeatureHint(BaseModel):
    """One feature-distillation pair: the student layer learns (through a 1x1 adapter) the teacher layer."""

    model_config = _STRICT
    student: str = Field(min_length=1)  # a name from the student's named_modules(), e.g. "features.3"
    teacher: str = Field(min_length=1)  # a name from the teacher's named_modules()
    weight: float = Field(1.0, gt=0)


class DistillConfig(BaseModel):
    """Hinton knowledge distillation: T^2 * KL(student_T || teacher_T) * (1 - alpha) + alpha * CE."""

    model_config = _STRICT
    epochs: int = Field(40, ge=1, le=1000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.3, ge=0, le=1)  # weight of the label loss; 0 = teacher's soft labels alone
    labeled_fraction: float = Field(1.0, gt=0, le=1)  # fraction of train labels the student may see
    compare_scratch: bool = True  # also train the student from scratch with the same budget
    # Also measure KD vs scratch when only this fraction of images is labeled (the teacher labels the rest).
    label_scarce_fraction: float | None = Field(None, gt=0, lt=1)
    patience: int | None = Field(None, ge=1)  # early stopping on val accuracy (None: train every epoch)
    features: list[FeatureHint] = []  # feature (hint) distillation pairs, added to the KD loss


class PruneConfig(BaseModel):
    """Dependency-aware structured channel pruning with Torch-Pruning, then a KD fine-tune."""

    model_config = _STRICT
    enabled: bool = True
    ratio: float = Field(0.5, ge=0, lt=1)  # fraction of channels removed in each prunable group
    importance: Literal["l1", "l2", "random"] = "l2"
    global_pruning: bool = False
    round_to: int | None = Field(None, ge=1)  # keep channel counts multiples of this (SIMD / tensor cores)
    iterative_steps: int = Field(1, ge=1, le=50)
    finetune_epochs: int = Field(15, ge=0, le=1000)
    lr: float = Field(0.005, gt=0)
    max_accuracy_drop: float = Field(2.0, ge=0)  # percentage points vs the unpruned student


class ExportConfig(BaseModel):
    """torch -> ONNX with a dynamic batch axis, checked and simplified, then compared with PyTorch."""

    model_config = _STRICT
    opset: int = Field(17, ge=13, le=23)
    simplify: bool = True
    dynamo: bool = False  # the TorchScript exporter is 10-20x faster here and needs no onnxscript
    atol: float = Field(1e-3, gt=0)  # max |onnx - torch| on logits
    min_top1_agreement: float = Field(0.99, ge=0, le=1)


class QuantizeConfig(BaseModel):
    """Static INT8 PTQ to QDQ ONNX with ONNX Runtime's calibration; the scheme comes from the target."""

    model_config = _STRICT
    enabled: bool = True
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(256, ge=1)
    max_accuracy_drop: float = Field(1.0, ge=0)  # percentage points vs the FP32 student, held-out split
    min_top1_agreement: float = Field(0.95, ge=0, le=1)  # vs the FP32 ONNX
    # When the budget is missed: retry keeping the most sensitive layers (first conv, classifier) in float.
    fallback: bool = True
    exclude_nodes: list[str] = []


class BenchmarkConfig(BaseModel):
    """Latency of teacher FP32, student FP32 and the final model, interleaved in one run."""

    model_config = _STRICT
    warmup: int = Field(30, ge=0)
    iterations: int = Field(300, ge=200)
    threads: int | None = Field(None, ge=1)
    batches: list[int] | None = None  # default: the target's benchmark_batches

    @field_validator("batches")
    @classmethod
    def _positive(cls, v):
        if v is not None and (not v or any(b < 1 for b in v)):
            raise ValueError(f"batches must be a non-empty list of integers >= 1, got {v}")
        return v


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
    teacher: ModelSpec
    student: ModelSpec
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
    for key in ("teacher", "student", "data"):
        if key in data and not isinstance(data[key], dict):
            raise UserError(f"{p}: {key} must be a mapping such as {{builtin: ...}}, got {data[key]!r}")
        if isinstance(data.get(key), dict):
            _check_union_keys(p, key, data[key])
    cfg = validate_model(PipelineConfig, data, str(p))
    base = p.resolve().parent
    _check_files(cfg, base, p)
    return cfg, base


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
        else:
            raise UserError(
                f"{path}: {key} needs 'builtin: NAME' ({', '.join(BUILTIN_MODELS)}) or 'factory: module:function', "
                f"got keys {sorted(section)}"
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
        ("teacher.weights", cfg.teacher.weights),
        ("student.weights", cfg.student.weights),
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
