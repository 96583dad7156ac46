"""The runner protocol every runtime implements, so the benchmark harness is written once.

A runner is opened once, then `infer` is called with a dict of named numpy arrays and returns the
outputs as a list of numpy arrays (in the model's output order), then it is closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pipeline.errors import UserError


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (None for a dynamic dimension) and numpy dtype name."""

    name: str
    shape: tuple[Any, ...]
    dtype: str


@runtime_checkable
class Runner(Protocol):
    """open -> infer* -> close. Implementations live in `pipeline/runtimes/<runtime>.py`."""

    runtime: str

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


@dataclass
class RunnerOptions:
    """Options common to all runners."""

    threads: int | None = None
    providers: list[str] | None = None
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


RUNTIMES = ("onnxruntime", "tensorrt", "pytorch")


def runtime_for_path(path: str) -> str:
    """Guess the runtime from a model file's extension (.onnx, .engine/.plan, .pt2/.pt)."""
    p = str(path).lower()
    if p.endswith(".onnx"):
        return "onnxruntime"
    if p.endswith((".engine", ".plan", ".trt")):
        return "tensorrt"
    if p.endswith((".pt2", ".pt", ".pth", ".safetensors")) or ":" in str(path):
        return "pytorch"
    raise UserError(
        f"cannot tell the runtime of {path!r} from its extension "
        "(allowed: .onnx, .engine/.plan, .pt2, or module:function); pass --runtime"
    )


def open_runner(model: str, runtime: str | None = None, options: RunnerOptions | None = None) -> Runner:
    """Create (not yet opened) the runner for `model`.

    Args:
        model: path to the model file (or `module:function` for a PyTorch factory).
        runtime: one of RUNTIMES, or None to guess from the extension.
        options: thread count, providers, device.
    Returns:
        A Runner; call `open()` before `infer`.
    """
    runtime = runtime or runtime_for_path(model)
    options = options or RunnerOptions()
    if runtime == "onnxruntime":
        from pipeline.runtimes.ort import OrtRunner

        return OrtRunner(model, options)
    if runtime == "tensorrt":
        from pipeline.runtimes.trt import TrtRunner

        return TrtRunner(model, options)
    if runtime == "pytorch":
        from pipeline.runtimes.pyt import TorchRunner

        return TorchRunner(model, options)
    raise UserError(f"unknown runtime {runtime!r} (allowed: {', '.join(RUNTIMES)})")
