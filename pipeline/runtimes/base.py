"""The Runtime protocol every runtime implements, its typed options, its one error type, and the registry.

A runtime is a context manager: `with open_runtime(model, options=...) as rt:` opens it (loads the model,
allocates what inference needs) and closes it on the way out, error or not. Inside, `rt.infer` takes a
dict of named numpy arrays and returns the outputs as a list of numpy arrays (in the model's output
order). Every failure a runtime raises is a `RuntimeFailure`, a `UserError`: the CLI prints it in one
line and exits 2.

`ort.py` and `trt.py` are also copied into deploy bundles and run on the device without edgepipe, so
they import this module only inside `try/except ImportError` and carry minimal fallbacks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pipeline.errors import UserError


class RuntimeFailure(UserError):
    """A runtime cannot load or run a model here: missing file or library, no device, bad option or input.

    The message names the path, option or input and what is allowed; exit code 2.
    """


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (None for a dynamic dimension) and numpy dtype name."""

    name: str
    shape: tuple[Any, ...]
    dtype: str


@runtime_checkable
class Runtime(Protocol):
    """open -> infer* -> close, or `with runtime:`. Implementations live in `pipeline/runtimes/<name>.py`.

    Attributes:
        runtime: the canonical runtime name ("onnxruntime", "tensorrt", "pytorch").
        supports_trtexec: whether NVIDIA's trtexec can time this runtime's model files (TensorRT engines).
    """

    runtime: str
    supports_trtexec: bool

    def open(self) -> None:
        """Load the model and allocate whatever inference needs."""

    def inputs(self) -> list[TensorSpec]:
        """The model's inputs (valid after `open`)."""

    def infer(self, feeds: dict[str, Any]) -> list[Any]:
        """Run once on named numpy inputs and return the outputs as numpy arrays."""

    def close(self) -> None:
        """Release the session / engine / buffers."""

    def describe(self) -> dict[str, Any]:
        """Runtime name, version and settings (threads, providers, precision) for reports."""

    def __enter__(self) -> Runtime:
        """Open and return the runtime."""

    def __exit__(self, *exc: object) -> None:
        """Close the runtime."""


GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
TRANSFER_MODES = ("included", "excluded")


@dataclass(frozen=True)
class RuntimeOptions:
    """Options for any runtime; each runtime reads the fields that apply to it. Validated on creation.

    Attributes:
        threads: intra-op threads (ONNX Runtime) / torch threads; None: the library's default.
        providers: ONNX Runtime execution providers in priority order; None: every local one.
        device: "cpu", "cuda" or "cuda:N" (PyTorch; TensorRT always runs on CUDA).
        graph_optimization_level: ONNX Runtime graph optimizations, one of GRAPH_OPTIMIZATION_LEVELS.
        shared_thread_pool: ONNX Runtime: use the process-wide intra-op pool (see `OrtRuntime`).
        transfers: TensorRT: whether `last_device_ms` spans the host<->device copies ("included") or the
            enqueue only ("excluded").
        dla_core: TensorRT: the DLA core an engine was built for; None: the GPU.
        weights: PyTorch factory models: a .safetensors file or a state_dict for torch.load(weights_only=True).
        input_shape: PyTorch factory models: the input shape, since there is no graph to read it from.
    Raises:
        RuntimeFailure: a value out of range, naming the field and what is allowed.
    """

    threads: int | None = None
    providers: tuple[str, ...] | None = None
    device: str = "cpu"
    graph_optimization_level: str = "all"
    shared_thread_pool: bool = False
    transfers: str = "included"
    dla_core: int | None = None
    weights: str | None = None
    input_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            raise RuntimeFailure(f"threads = {self.threads!r}: must be an integer >= 1 (or None: the default)")
        if self.providers is not None:
            if isinstance(self.providers, str) or not all(isinstance(p, str) and p for p in self.providers):
                raise RuntimeFailure(f"providers = {self.providers!r}: must be a list of provider names, "
                                     "e.g. ['CUDAExecutionProvider', 'CPUExecutionProvider']")
            object.__setattr__(self, "providers", tuple(self.providers))
        if not isinstance(self.device, str) or not _is_device(self.device.lower()):
            raise RuntimeFailure(f"device = {self.device!r} (allowed: cpu, cuda, cuda:N)")
        _one_of("graph_optimization_level", self.graph_optimization_level, GRAPH_OPTIMIZATION_LEVELS)
        if not isinstance(self.shared_thread_pool, bool):
            raise RuntimeFailure(f"shared_thread_pool = {self.shared_thread_pool!r} (allowed: true, false)")
        _one_of("transfers", self.transfers, TRANSFER_MODES)
        if self.dla_core is not None and (not _is_int(self.dla_core) or self.dla_core < 0):
            raise RuntimeFailure(f"dla_core = {self.dla_core!r}: must be an integer >= 0 (or None: the GPU)")
        if self.weights is not None:
            if not isinstance(self.weights, (str, os.PathLike)) or not os.fspath(self.weights):
                raise RuntimeFailure(f"weights = {self.weights!r}: must be a file path (or None)")
            object.__setattr__(self, "weights", os.fspath(self.weights))
        if self.input_shape is not None:
            shape = tuple(self.input_shape) if isinstance(self.input_shape, (tuple, list)) else None
            if not shape or not all(_is_int(d) and d >= 1 for d in shape):
                raise RuntimeFailure(f"input_shape = {self.input_shape!r}: must be dimensions >= 1, "
                                     "e.g. (1, 3, 224, 224)")
            object.__setattr__(self, "input_shape", shape)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_device(d: str) -> bool:
    kind, sep, index = d.partition(":")
    return d == "cpu" or (kind == "cuda" and (not sep or index.isdigit()))


def _one_of(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise RuntimeFailure(f"{name} = {value!r} (allowed: {', '.join(allowed)})")


RUNTIMES = ("onnxruntime", "tensorrt", "pytorch")
# Each runtime's class, imported only when a model is opened with it (heavy libraries stay unloaded).
RUNTIME_CLASSES = {
    "onnxruntime": ("pipeline.runtimes.ort", "OrtRuntime"),
    "tensorrt": ("pipeline.runtimes.trt", "TrtRuntime"),
    "pytorch": ("pipeline.runtimes.pyt", "TorchRuntime"),
}
# The names people type for each runtime (matched case-insensitively).
RUNTIME_ALIASES = {
    "onnxruntime": "onnxruntime", "ort": "onnxruntime", "onnxrt": "onnxruntime", "onnx": "onnxruntime",
    "tensorrt": "tensorrt", "trt": "tensorrt",
    "pytorch": "pytorch", "torch": "pytorch", "pt": "pytorch",
}


def canonical_runtime(name: str, field: str = "runtime") -> str:
    """The canonical runtime name for `name` or one of its aliases (`ort`, `trt`, `torch`, ...).

    Args:
        name: what the user typed, any case.
        field: the option or config field it came from, for the message (e.g. "--runtime").
    Returns:
        One of RUNTIMES.
    Raises:
        RuntimeFailure: an unknown name, listing the allowed names.
    """
    key = str(name).strip().lower()
    if key in RUNTIME_ALIASES:
        return RUNTIME_ALIASES[key]
    allowed = "; ".join(
        f"{r} ({', '.join(a for a, c in RUNTIME_ALIASES.items() if c == r and a != r)})" for r in RUNTIMES
    )
    sep = " " if field.startswith("-") else " = "  # `--runtime 'x'` for a flag, `runtime = 'x'` for a field
    raise RuntimeFailure(f"{field}{sep}{name!r} is not a runtime (allowed: {allowed})")


def runtime_for_path(path: str) -> str:
    """Guess the runtime from a model file's extension (.onnx, .engine/.plan, .pt2/.pt)."""
    p = str(path).lower()
    if p.endswith(".onnx"):
        return "onnxruntime"
    if p.endswith((".engine", ".plan", ".trt")):
        return "tensorrt"
    if p.endswith((".pt2", ".pt", ".pth", ".safetensors")) or ":" in str(path):
        return "pytorch"
    raise RuntimeFailure(
        f"cannot tell the runtime of {path!r} from its extension "
        "(allowed: .onnx, .engine/.plan, .pt2, or module:function); pass --runtime"
    )


def open_runtime(model: str, runtime: str | None = None, options: RuntimeOptions | None = None) -> Runtime:
    """Create (not yet opened) the runtime for `model`; use it as `with open_runtime(...) as rt:`.

    Args:
        model: path to the model file (or `module:function` for a PyTorch factory).
        runtime: a runtime name or alias (see `canonical_runtime`), or None to guess from the extension.
        options: threads, providers, device and the runtime-specific fields.
    Returns:
        A Runtime; entering it (or `open()`) loads the model.
    Raises:
        RuntimeFailure: unknown runtime name or extension.
    """
    import importlib

    name = canonical_runtime(runtime) if runtime else runtime_for_path(model)
    module, cls = RUNTIME_CLASSES[name]
    return getattr(importlib.import_module(module), cls)(model, options or RuntimeOptions())
