"""Each stage's measured numbers as a frozen dataclass: `Artifact.metrics`.

`to_dict()` gives the JSON that `stage.json` and the manifest record (same keys, same order as the
stages always wrote; an optional field that is None is left out), `from_dict()` reads it back (a cached
stage). Later stages and the final record read these typed fields, never each other's raw dicts.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from pipeline.targets import QuantScheme


def optional(default: Any = None) -> Any:
    """A field left out of `to_dict()` while it is None (a metric only some runs have)."""
    return field(default=default, metadata={"omit_if_none": True})


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """Base: the JSON round trip shared by every stage's metrics."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able dict (field order; nested metrics and specs as dicts)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_if_none"):
                continue
            out[f.name] = _plain(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Read `to_dict()`'s output back.

        Args:
            data: a recorded metrics dict.
        Returns:
            An instance of `cls`.
        Raises:
            TypeError: a key this class does not have, or a required one missing.
        """
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown metrics {sorted(unknown)}")
        return cls(**{k: _typed(hints[k], v) for k, v in data.items()})


def _plain(value: Any) -> Any:
    if isinstance(value, Metrics):
        return value.to_dict()
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _typed(hint: Any, value: Any) -> Any:
    """Rebuild a nested Metrics or pydantic spec from its dict; anything else stays as recorded."""
    if value is None:
        return None
    for cand in (hint, *typing.get_args(hint)):
        if isinstance(cand, type) and issubclass(cand, Metrics):
            return cand.from_dict(value)
        if isinstance(cand, type) and hasattr(cand, "model_validate"):
            return cand.model_validate(value)
    return value


@dataclass(frozen=True, kw_only=True)
class TrainingRun(Metrics):
    """How one `fit` call trained: where, in what precision, how fast, how many epochs."""

    device: str  # e.g. "cpu", "cuda:0"
    precision: str  # "fp32", "bf16" or "fp16"
    threads: int  # torch intra-op threads
    images_per_s: float | None  # training throughput over this call's epochs (None: nothing trained now)
    epochs: int  # epochs trained (fewer than planned when stopped early)
    epochs_planned: int
    seconds: float
    best_epoch: int | None = optional()
    stopped_early_at: int | None = optional()
    resumed_at_epoch: int | None = optional()
    world_size: int = 1  # training processes (DDP ranks under `edgepipe run --nproc N`)

    @classmethod
    def of(cls, stats: dict) -> TrainingRun:
        """From `pipeline.training.fit`'s stats."""
        ips = stats.get("images_per_s")
        return cls(device=str(stats["device"]), precision=str(stats["precision"]), threads=int(stats["threads"]),
                   images_per_s=None if ips is None else round(float(ips), 1), epochs=int(stats["epochs"]),
                   epochs_planned=int(stats["epochs_planned"]), seconds=float(stats["seconds"]),
                   best_epoch=stats.get("best_epoch"), stopped_early_at=stats.get("stopped_early_at"),
                   resumed_at_epoch=stats.get("resumed_at_epoch"), world_size=int(stats.get("world_size", 1)))


@dataclass(frozen=True, kw_only=True)
class TrainTeacherMetrics(Metrics):
    """The teacher: where it came from, its held-out and validation accuracy, size."""

    source: str  # "trained here" or "weights <file>"
    train: dict | None = optional()  # epochs, final loss, val accuracy (when trained here)
    accuracy: float
    val_accuracy: float
    params: int
    macs: int
    training: TrainingRun | None = optional()  # device, precision, threads, speed (when trained here)


@dataclass(frozen=True, kw_only=True)
class LabelScarce(Metrics):
    """KD against scratch with only a fraction of the labels."""

    labeled_fraction: float
    labeled_images: int
    kd_accuracy: float
    scratch_accuracy: float
    kd_gain_pp: float


@dataclass(frozen=True, kw_only=True)
class DistillMetrics(Metrics):
    """The distilled student, and the from-scratch baselines it is compared with."""

    temperature: float
    alpha: float
    accuracy: float
    params: int
    macs: int
    labeled_images: int
    images: int
    scratch_accuracy: float | None = optional()
    kd_gain_pp: float | None = optional()
    label_scarce: LabelScarce | None = optional()
    training: TrainingRun | None = optional()  # the KD run: device, precision, threads, speed
    scratch_training: TrainingRun | None = optional()


@dataclass(frozen=True, kw_only=True)
class PruneMetrics(Metrics):
    """Size and accuracy before and after structured pruning (+ KD fine-tune)."""

    ratio: float
    params_before: int
    macs_before: int
    accuracy_before: float
    params: int
    macs: int
    accuracy: float
    pruned: bool
    params_reduction: float | None = optional()
    macs_reduction: float | None = optional()
    training: TrainingRun | None = optional()  # the KD fine-tune (the last step's, when iterative)
    # prune.target runs: the budget, the search's candidates, and what the pruning bought, measured (p50 ms,
    # batch 1, ONNX Runtime CPU, one thread, interleaved with the unpruned student in one process).
    target: dict | None = optional()  # {"kind", "value"}
    search: list | None = optional()  # one dict per measured candidate
    latency_before_ms: float | None = optional()
    latency_ms: float | None = optional()
    speedup: float | None = optional()
    latency_min_before_ms: float | None = optional()  # minima: what the search decides on (shared host)
    latency_min_ms: float | None = optional()
    speedup_min: float | None = optional()
    allocation: str | None = optional()  # "sensitivity" (damage per unit saved) or "uniform"
    group_ratios: dict | None = optional()  # group root module -> the ratio pruned (after rounding)
    measured_on: str | None = optional()  # where latency / speed-up was measured (this host, maybe not the target)
    round_to: int | None = optional()  # the channel multiple used (prune.round_to or the target's)
    sparsity: str | None = optional()  # "2:4": weights 2:4 sparse along input channels (the build reads it)
    sparse_layers: int | None = optional()


@dataclass(frozen=True, kw_only=True)
class OnnxExport(Metrics):
    """One exported ONNX: graph size, parity with PyTorch, accuracy, file size."""

    nodes_before: int
    nodes_after: int
    opset: int
    simplified: bool
    parity_vs_torch: dict  # max_abs_diff, top1_agreement, samples
    accuracy: float
    file_bytes: int


@dataclass(frozen=True, kw_only=True)
class ExportMetrics(Metrics):
    """The student's and the teacher's FP32 ONNX; `accuracy` is the student's."""

    student: OnnxExport
    teacher: OnnxExport
    accuracy: float


@dataclass(frozen=True, kw_only=True)
class QuantizeMetrics(Metrics):
    """The INT8 model that passed: accuracy against FP32, the scheme, and every attempt made."""

    accuracy: float
    accuracy_fp32: float
    drop_pp: float
    top1_agreement: float
    max_abs_diff: float
    excluded_nodes: list
    attempts: list
    scheme: QuantScheme
    method: str
    calibration_samples: int
    file_bytes: int
    # The search (issue 8); optional, so records written before it still read back.
    decision: str | None = optional()  # "int8", or "fp32" when INT8 was not faster on the target
    reason: str | None = optional()
    calibration: str | None = optional()  # the chosen calibration, e.g. "percentile 99.99 @256"
    search_seconds: float | None = optional()
    search_timed_out: bool | None = optional()
    steps: dict | None = optional()  # reduce_range, calibration, equalize, bias_correction: chosen / kept and why
    float_layers: list | None = optional()  # [{name, why, cost_ms}] of the layers left in float
    latency_ms: dict | None = optional()  # fp32_ms, int8_ms, all_int8_ms (batch 1, the target's ORT options)
    isa: dict | None = optional()  # the host ISA facts behind reduce_range
    fake_quant: bool | None = optional()  # TensorRT targets: accuracy measured as fake-quant
    float_layers_precision: str | None = optional()  # TensorRT: how float layers run on the device
    qat: dict | None = optional()
    # Any task (issue 9): the head's decode arithmetic kept in float ([{name, op_type, outputs, why}]), and
    # the score that judged the model ("top-1" or the user's "module:function").
    head_exclusions: list | None = optional()
    head_exclusions_effect: dict | None = optional()  # score_with, score_without, drop_pp_without_vs_with
    scored_by: str | None = optional()


@dataclass(frozen=True, kw_only=True)
class BuildMetrics(Metrics):
    """The target build: the engine's facts when built, else why not; the device's build commands."""

    device_build_command: list | None = optional()
    parity: dict | None = optional()  # engine vs ONNX Runtime
    trtexec: list | None  # recorded even when None (an ONNX Runtime target)
    build: dict | None = optional()
    summary: str | None = optional()
    reason: str | None = optional()
    # ONNX Runtime Mobile targets (`onnxruntime.model_format: ort`): the .ort file, its reduced-build config,
    # how the app opens it, and ORT's mobile usability verdict (NNAPI / CoreML partition coverage).
    ort_format: dict | None = optional()
    mobile_usability: dict | None = optional()
    sparse_2_4: bool | None = optional()  # True: built with TensorRT's sparse-weights flag (2:4 model, sparse cores)

    @property
    def note(self) -> str:
        """One line for the report: why nothing was built, or what was."""
        return self.reason or self.summary or ""


@dataclass(frozen=True, kw_only=True)
class LatencySummary(Metrics):
    """Latency of one model at one batch size, in ms."""

    p50: float
    p90: float
    p99: float
    throughput_ips: float
    cv: float


@dataclass(frozen=True, kw_only=True)
class BenchmarkMetrics(Metrics):
    """Host latency of teacher, student and final model per batch; `batch` is the headline batch."""

    latency: dict  # label -> batch (str) -> LatencySummary
    batch: int
    speedup_p50_vs_teacher: float
    threads: Any  # the intra-op threads the runs used, as the environment fingerprint recorded them

    def at(self, label: str, batch: int | None = None) -> LatencySummary | None:
        """The latency of model `label` ("teacher_fp32", "student_fp32", "final_int8") at `batch` (default:
        the headline batch), or None when it was not measured."""
        return self.latency.get(label, {}).get(str(self.batch if batch is None else batch))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkMetrics:
        """See `Metrics.from_dict`."""
        latency = {label: {b: LatencySummary.from_dict(s) for b, s in per.items()}
                   for label, per in data.get("latency", {}).items()}
        return super().from_dict(dict(data, latency=latency))


@dataclass(frozen=True, kw_only=True)
class ReportMetrics(Metrics):
    """How many rows the report has."""

    rows: int
