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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
from pipeline.errors import UserError
from pipeline.validation import load_mapping, validate_model

_STRICT = ConfigDict(extra="forbid", frozen=True)
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
    enabled: bool = True  # false: no distillation (the student's weights, or `model:`, go on as they are)
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


class PruneTarget(BaseModel):
    """What the pruned student must reach (exactly one key); the stage prunes in steps until it holds."""

    model_config = _STRICT
    latency_ms: float | None = Field(None, gt=0)  # measured p50, batch 1, ONNX Runtime CPU, one thread
    speedup: float | None = Field(None, gt=1)  # unpruned student's measured p50 / the pruned one's
    macs: int | None = Field(None, ge=1)  # multiply-accumulates per image
    params: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> PruneTarget:
        given = [k for k in PRUNE_TARGET_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"prune.target needs exactly one of {', '.join(PRUNE_TARGET_KINDS)} "
                             f"(got {', '.join(given) or 'none'})")
        return self

    @property
    def kind(self) -> str:
        """The key that is set."""
        return next(k for k in PRUNE_TARGET_KINDS if getattr(self, k) is not None)

    @property
    def value(self) -> float:
        """Its value."""
        return float(getattr(self, self.kind))


PRUNE_TARGET_KINDS = ("latency_ms", "speedup", "macs", "params")


class PruneConfig(BaseModel):
    """Dependency-aware structured channel pruning with Torch-Pruning, then a KD fine-tune."""

    model_config = _STRICT
    enabled: bool = True
    ratio: float = Field(0.5, ge=0, lt=1)  # fraction of channels removed in each prunable group (no `target`)
    target: PruneTarget | None = None  # a budget instead of a ratio: {speedup: 2.0}, {latency_ms: 5}, ...
    # With a latency/speed-up target: prune slow layers harder (ONNX Runtime's per-layer profile on the host).
    profile_weighting: bool = True
    search_steps: int = Field(8, ge=1, le=30)  # candidates measured at most while searching for the target
    importance: Literal["l1", "l2", "random"] = "l2"
    global_pruning: bool = False
    # Keep channel counts multiples of this (SIMD width / tensor-core tile); None: the target's
    # `channel_multiple`; 1: no rounding.
    round_to: int | None = Field(None, ge=1)
    # "2:4": magnitude 2:4 masks along input channels (sparse tensor cores: Ampere GPUs, Jetson Orin).
    sparsity: Literal["none", "2:4"] = "none"
    iterative_steps: int = Field(1, ge=1, le=50)
    finetune_epochs: int = Field(15, ge=0, le=1000)
    lr: float = Field(0.005, gt=0)
    max_accuracy_drop: float = Field(2.0, ge=0)  # percentage points vs the unpruned student

    @model_validator(mode="after")
    def _ratio_or_target(self) -> PruneConfig:
        if self.target is not None and "ratio" in self.model_fields_set:
            raise ValueError("give prune.ratio or prune.target, not both (the target decides the ratios)")
        return self


class ExportConfig(BaseModel):
    """torch -> ONNX with a dynamic batch axis, checked and simplified, then compared with PyTorch."""

    model_config = _STRICT
    opset: int = Field(17, ge=13, le=23)
    simplify: bool = True
    dynamo: bool = False  # the TorchScript exporter is 10-20x faster here and needs no onnxscript
    atol: float = Field(1e-3, gt=0)  # max |onnx - torch| on logits
    min_top1_agreement: float = Field(0.99, ge=0, le=1)


class QatConfig(BaseModel):
    """Quantization-aware training with KD, the last rung when post-training quantization misses the budget."""

    model_config = _STRICT
    enabled: bool = False  # needs the torch model and training data (`edgepipe run`), not an ONNX file alone
    epochs: int = Field(2, ge=1, le=100)
    lr: float = Field(1e-4, gt=0)


class QuantizeConfig(BaseModel):
    """Accuracy-aware static INT8 PTQ to QDQ ONNX: a measured search; the scheme comes from the target."""

    model_config = _STRICT
    enabled: bool = True
    # "auto" searches MinMax, entropy and percentile; naming one restricts the search to it.
    method: Literal["auto", "minmax", "entropy", "percentile"] = "auto"
    percentiles: list[float] = Field([99.99, 99.999], min_length=1)  # percentile candidates
    calibration_samples: int = Field(256, ge=1)  # the most training images calibrated; a quarter is tried too
    max_accuracy_drop: float = Field(1.0, ge=0)  # percentage points vs the FP32 student, held-out split
    min_top1_agreement: float = Field(0.95, ge=0, le=1)  # vs the FP32 ONNX
    # Cross-layer equalization and bias correction are tried, and kept only when they measurably help.
    equalize: bool = True
    bias_correction: bool = True
    # When the budget is missed: measure each layer's sensitivity and keep the fewest, cheapest layers in float.
    fallback: bool = True
    max_float_layers: int = Field(16, ge=1)
    sensitivity: Literal["float_one", "quant_one"] = "float_one"
    # The search stops here with the best model found so far. The 32 px digits demo needs a few seconds;
    # EfficientNet-Lite0 at 224 px on 2 shared cores needs several minutes (benchmarks/int8_peers.py).
    search_seconds: float = Field(600.0, gt=0)
    search_samples: int = Field(512, ge=1)  # held-out images that decide the search (the final check uses others)
    exclude_nodes: list[str] = []  # always kept in float (e.g. a detector's heads): fixed, never searched
    qat: QatConfig = QatConfig()
    # fp16: no INT8 search; the FP16 conversion is verified against FP32 with the same budget (a GPU/NPU that
    # runs half precision better, or a budget INT8 cannot meet). The file is still model_int8.onnx.
    precision: Literal["int8", "fp16"] = "int8"

    @field_validator("percentiles")
    @classmethod
    def _percent(cls, v):
        if any(not 50 < p < 100 for p in v):
            raise ValueError(f"percentiles must lie in (50, 100), got {v}")
        return v


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
