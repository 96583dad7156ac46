"""The per-stage sections of the pipeline config (`train_teacher:`, `distill:`, `prune:`, `export:`, `quantize:`,
`benchmark:`): typed, frozen, every field with a default; unknown keys are errors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    # With a target: "uniform" searches one ratio for every group; "sensitivity" prunes first the groups that
    # cost the outputs least per ms (per-layer profile), MAC or parameter saved, each pruned alone on a copy.
    # Uniform is the default because it measured as accurate or better after the KD fine-tune
    # (benchmarks/prune_speedup.py, README "Pruning").
    allocation: Literal["uniform", "sensitivity"] = "uniform"
    search_steps: int = Field(8, ge=1, le=30)  # candidates measured at most while searching for the target
    # The search stops at a candidate that meets the target with at most this fraction to spare (0.05: a
    # speed-up target of 2.0 accepts 2.0-2.1); smaller lands closer at the cost of more candidates.
    target_tolerance: float = Field(0.05, gt=0, le=0.5)
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
