"""Deployment targets as data: `targets/<name>.yaml|toml` validated into one typed `Target`.

A target says what the hardware forces (INT8 scheme, compute capability, DLA cores, sparsity,
TensorRT version), the runtime that serves it, the shape profile and the latency budget.
Unknown keys are errors; every message names the file, the field and what is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from pipeline.errors import UserError
from pipeline.validation import load_mapping, validate_model

_STRICT = ConfigDict(extra="forbid", frozen=True)


class QuantScheme(BaseModel):
    """How INT8 quantization must be done for this hardware/runtime."""

    model_config = _STRICT
    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    # 7-bit weights avoid the int16 accumulator saturation of AVX2/AVX-512 (no VNNI) u8s8 kernels.
    # "auto": the quantize stage measures both on the host (only true on x86 without VNNI) and records it.
    reduce_range: bool | Literal["auto"] = False
    symmetric_activations: bool = False
    symmetric_weights: bool = True
    # TensorRT's ONNX parser rejects int32 bias DequantizeLinear: keep biases in float there.
    quantize_bias: bool = True


class ShapeProfile(BaseModel):
    """Batch sizes an engine / session must accept (TensorRT optimization profile)."""

    model_config = _STRICT
    min_batch: int = Field(1, ge=1)
    opt_batch: int = Field(1, ge=1)
    max_batch: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ShapeProfile:
        if not (self.min_batch <= self.opt_batch <= self.max_batch):
            raise ValueError(
                f"need min_batch <= opt_batch <= max_batch, got {self.min_batch}, {self.opt_batch}, {self.max_batch}"
            )
        return self


class TensorRTSpec(BaseModel):
    """What a TensorRT target's GPU and software stack force or offer."""

    model_config = _STRICT
    gpu: str
    compute_capability: str = Field(pattern=r"^\d+\.\d+$")
    dla_cores: int = Field(0, ge=0, le=2)
    use_dla: bool = False
    # Which DLA core to use, and whether layers DLA cannot run may fall back to the GPU.
    dla_core: int = Field(0, ge=0, le=1)
    gpu_fallback: bool = True
    # The GPU has 2:4 sparse tensor cores (Ampere and newer, every Orin). The build asks TensorRT for sparse
    # kernels only when the model is also 2:4 (prune.sparsity: "2:4"); this says what the hardware offers.
    sparsity_2_4: bool = False
    jetpack: str | None = None
    tensorrt_version: str = Field(pattern=r"^\d+(\.\d+)*$")
    workspace_mib: int = Field(1024, ge=16)
    builder_optimization_level: int = Field(3, ge=0, le=5)
    allow_fp16: bool = True
    timing_cache: bool = True

    @model_validator(mode="after")
    def _hardware(self) -> TensorRTSpec:
        if self.use_dla and self.dla_cores == 0:
            raise ValueError("use_dla is true but this GPU has dla_cores = 0 (allowed: use_dla: false)")
        if self.use_dla and self.dla_core >= self.dla_cores:
            raise ValueError(f"dla_core = {self.dla_core} but this GPU has {self.dla_cores} DLA cores "
                             f"(allowed: 0..{self.dla_cores - 1})")
        if self.sparsity_2_4 and _version_tuple(self.compute_capability) < (8, 0):
            raise ValueError(
                f"sparsity_2_4 is true but compute capability {self.compute_capability} has no 2:4 sparse tensor "
                "cores (Ampere, 8.0, and newer do)"
            )
        if self.jetpack is not None:
            expected = JETPACK_TENSORRT.get(self.jetpack)
            if expected is None:
                raise ValueError(f"jetpack = {self.jetpack!r} is unknown (allowed: {', '.join(JETPACK_TENSORRT)})")
            if _version_tuple(self.tensorrt_version)[:2] != _version_tuple(expected)[:2]:
                raise ValueError(
                    f"tensorrt_version = {self.tensorrt_version!r} but JetPack {self.jetpack} ships TensorRT {expected}"
                )
        return self


# TensorRT shipped with each JetPack release (engines must be built with the device's own TensorRT).
JETPACK_TENSORRT = {"4.6": "8.2", "5.1": "8.5", "6.0": "8.6", "6.1": "10.3", "6.2": "10.3", "7.2": "10.16"}


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


class XnnpackOptions(BaseModel):
    """XNNPACK execution provider (ARM CPUs on Android/iOS): ORT's "intra_op_num_threads" provider option."""

    model_config = _STRICT
    # XNNPACK runs its own thread pool; ORT's docs recommend 1 intra-op thread for the session beside it.
    intra_op_num_threads: int = Field(1, ge=1)


class NnapiOptions(BaseModel):
    """NNAPI execution provider (Android): the NNAPI_FLAG_* bits of ORT's nnapi_provider_factory.h."""

    model_config = _STRICT
    use_fp16: bool = False  # NNAPI_FLAG_USE_FP16: fp16 relaxation, faster on some NPUs, less precise
    use_nchw: bool = False  # NNAPI_FLAG_USE_NCHW: API level 29+, measured slower than NHWC by ORT
    cpu_disabled: bool = False  # NNAPI_FLAG_CPU_DISABLED: ORT's kernels instead of nnapi-reference on CPU
    cpu_only: bool = False  # NNAPI_FLAG_CPU_ONLY: reference outputs, for validation only

    @model_validator(mode="after")
    def _exclusive(self) -> NnapiOptions:
        if self.cpu_disabled and self.cpu_only:
            raise ValueError("nnapi: cpu_disabled and cpu_only are both true (allowed: at most one of them)")
        return self


class CoreMLOptions(BaseModel):
    """CoreML execution provider (iOS/macOS): ORT's provider options ModelFormat, MLComputeUnits,
    RequireStaticInputShapes, EnableOnSubgraphs."""

    model_config = _STRICT
    model_format: Literal["MLProgram", "NeuralNetwork"] = "MLProgram"
    compute_units: Literal["ALL", "CPUOnly", "CPUAndGPU", "CPUAndNeuralEngine"] = "ALL"
    require_static_input_shapes: bool = False
    enable_on_subgraphs: bool = False


class OrtFormatSpec(BaseModel):
    """How the ORT-format (.ort) model is made and checked against its ONNX (`onnxruntime.model_format: ort`)."""

    model_config = _STRICT
    # ORT's converter: "fixed" bakes every optimization in (CPU/XNNPACK); "runtime" saves some to replay at
    # load time, which ORT recommends when NNAPI or CoreML take an unknown share of the nodes.
    optimization_style: Literal["fixed", "runtime"] = "fixed"
    # The .ort must agree with its ONNX on the held-out sample (ORT CPU provider on both).
    min_top1_agreement: float = Field(0.995, ge=0, le=1)
    max_abs_diff: float | None = Field(None, gt=0)  # None: measured and recorded, not gated
    # Per-operator type lists in required_operators_and_types.config make a reduced build smaller still.
    type_reduction: bool = True


class OrtSpec(BaseModel):
    """ONNX Runtime settings for CPU / ARM / phone targets."""

    model_config = _STRICT
    execution_providers: list[str] = ["CPUExecutionProvider"]
    intra_op_threads: int | None = Field(None, ge=1)
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    # "ort": the build stage also writes model.ort + required_operators_and_types.config (ORT Mobile).
    model_format: Literal["onnx", "ort"] = "onnx"
    ort_format: OrtFormatSpec = OrtFormatSpec()
    xnnpack: XnnpackOptions | None = None
    nnapi: NnapiOptions | None = None
    coreml: CoreMLOptions | None = None

    @model_validator(mode="after")
    def _options_need_their_provider(self) -> OrtSpec:
        for section, provider in (("xnnpack", "XnnpackExecutionProvider"), ("nnapi", "NnapiExecutionProvider"),
                                  ("coreml", "CoreMLExecutionProvider")):
            if getattr(self, section) is not None and provider not in self.execution_providers:
                raise ValueError(f"onnxruntime.{section} is set but {provider} is not in execution_providers "
                                 f"{self.execution_providers} (add it, or remove the {section} section)")
        return self


class Target(BaseModel):
    """One deployment target, loaded from `targets/<name>.yaml|toml`."""

    model_config = _STRICT
    name: str
    description: str = ""
    runtime: Literal["onnxruntime", "tensorrt"]
    arch: Literal["x86_64", "aarch64"]
    # "phone": Android/iOS, served by ONNX Runtime Mobile in an app (no SSH, no Python there).
    device_kind: Literal["cpu", "gpu", "jetson", "arm-board", "phone"]
    quantization: QuantScheme = QuantScheme()
    profile: ShapeProfile = ShapeProfile()
    benchmark_batches: list[int] = [1, 32]
    latency_budget_ms: float | None = Field(None, gt=0)
    # Channel counts this hardware computes without waste (SIMD width, tensor-core tile, DLA format); the
    # prune stage rounds pruned widths to it unless prune.round_to says otherwise.
    channel_multiple: int = Field(8, ge=1, le=128)
    tensorrt: TensorRTSpec | None = None
    onnxruntime: OrtSpec | None = None
    # What the user typed (`jetson`, a file path); not a field: it never enters dumps or cache keys.
    _alias: str | None = PrivateAttr(default=None)

    @property
    def alias(self) -> str:
        """The name the user asked for (`jetson` for `jetson-orin-nano`), or the canonical `name`."""
        return self._alias or self.name

    @model_validator(mode="after")
    def _consistent(self) -> Target:
        if self.runtime == "tensorrt":
            if self.tensorrt is None:
                raise ValueError("runtime 'tensorrt' needs a 'tensorrt:' section")
            q = self.quantization
            if q.activation_type != "int8" or q.weight_type != "int8":
                raise ValueError("TensorRT needs symmetric S8S8 QDQ: set activation_type and weight_type to int8")
            if not (q.symmetric_activations and q.symmetric_weights):
                raise ValueError("TensorRT needs symmetric INT8: set symmetric_activations and symmetric_weights true")
            if q.quantize_bias:
                raise ValueError("TensorRT's ONNX parser rejects int32 bias DequantizeLinear: set quantize_bias false")
            if self.tensorrt.use_dla and self.profile.min_batch != self.profile.max_batch:
                raise ValueError(
                    "use_dla is true but the batch is dynamic: DLA runs static shapes only "
                    "(set profile min_batch = opt_batch = max_batch)"
                )
            if self.device_kind == "jetson" and self.tensorrt.jetpack is None:
                raise ValueError("a jetson target needs tensorrt.jetpack (the JetPack release on the device)")
        if self.runtime == "onnxruntime" and self.onnxruntime is None:
            object.__setattr__(self, "onnxruntime", OrtSpec())
        if self.device_kind == "phone" and self.runtime != "onnxruntime":
            raise ValueError(f"device_kind 'phone' needs runtime 'onnxruntime' (ONNX Runtime Mobile), "
                             f"got {self.runtime!r}")
        return self


def targets_dir() -> Path:
    """The folder searched for target names: $EDGEPIPE_TARGETS, else the repository's `targets/`."""
    env = os.environ.get("EDGEPIPE_TARGETS")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[1] / "targets"
    # From a checkout (or editable install) the repository's targets/; from a wheel, the packaged copy.
    return repo if repo.is_dir() else Path(__file__).resolve().parent / "_targets"


def available_targets() -> list[str]:
    """Names of the target files in `targets_dir()`."""
    d = targets_dir()
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.iterdir() if p.suffix in (".yaml", ".yml", ".toml"))


# Short names for targets: `make deploy TARGET=jetson` means the Orin Nano.
TARGET_ALIASES = {"jetson": "jetson-orin-nano"}


def resolve_target_path(name_or_path: str) -> Path:
    """Find a target file by name (`cpu`, an alias such as `jetson`) or path.

    Args:
        name_or_path: a target name, a key of TARGET_ALIASES, or a .yaml/.yml/.toml path.
    Returns:
        The target file.
    Raises:
        UserError: no such file or name (the message lists the names).
    """
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml", ".toml"):
        if not p.is_file():
            raise UserError(f"target file not found: {p}")
        return p
    name = TARGET_ALIASES.get(name_or_path, name_or_path)
    for ext in (".yaml", ".yml", ".toml"):
        cand = targets_dir() / f"{name}{ext}"
        if cand.is_file():
            return cand
    raise UserError(
        f"unknown target '{name_or_path}' (allowed: {', '.join(available_targets() + list(TARGET_ALIASES))}, "
        "or a path to a .yaml/.toml target file)"
    )


def load_target(name_or_path: str | os.PathLike) -> Target:
    """Load and validate a target, once: pass the `Target` on instead of its name.

    Args:
        name_or_path: a target name from `targets/`, an alias (`jetson`), or a path to a target file.
    Returns:
        The validated, frozen `Target`; `.name` is the canonical name, `.alias` what was asked for.
    Raises:
        UserError: unknown name, missing file, unknown key or bad value (all named).
    """
    path = resolve_target_path(str(name_or_path))
    data = load_mapping(path, "target file")
    data.setdefault("name", path.stem)
    target = validate_model(Target, data, str(path))
    target._alias = str(name_or_path)
    return target
