"""Where training runs and at what precision: device strings, mixed precision, memory format.

torch is imported inside functions: `pipeline.training` (which re-exports these) is imported by the
stages on CPU-light code paths.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UserError

ALLOWED_DEVICES = '"auto", "cpu", "cuda" or "cuda:N"'


@dataclass(frozen=True)
class Precision:
    """How the forward passes run.

    Attributes:
        name: "bf16", "fp16" or "fp32" (what the stats record).
        dtype: the autocast dtype (a torch dtype), or None for plain fp32.
        needs_scaler: fp16 gradients underflow without a GradScaler; bf16 has fp32's exponent range.
    """

    name: str
    dtype: Any
    needs_scaler: bool


def resolve_device(device: str = "auto") -> Any:
    """The torch.device a device string names.

    Args:
        device: "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
    Returns:
        A `torch.device`.
    Raises:
        UserError: the string is none of the allowed forms, or CUDA is asked for but absent
            (or the index is past the last GPU).
    """
    import torch

    value = str(device).strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", value)
    if m is None:
        raise UserError(f"device {device!r} is not a device; allowed: {ALLOWED_DEVICES}")
    if not torch.cuda.is_available():
        raise UserError(
            f"device {device!r} asks for CUDA, but torch {torch.__version__} sees no CUDA GPU "
            f"(torch.version.cuda = {torch.version.cuda}); use \"cpu\" or \"auto\" (allowed: {ALLOWED_DEVICES})"
        )
    index = int(m.group(1)) if m.group(1) is not None else None
    if index is not None and index >= torch.cuda.device_count():
        raise UserError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) present "
                        f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return torch.device("cuda", index) if index is not None else torch.device("cuda")


def choose_precision(device: Any, amp: bool = True) -> Precision:
    """bf16 autocast on GPUs that support it, else fp16 with a GradScaler; fp32 on CPU or with amp off.

    Args:
        device: a torch.device.
        amp: False forces fp32 everywhere.
    Returns:
        The `Precision`.
    """
    import torch

    if not amp or device.type != "cuda":
        # CPU autocast (bf16) is slower than fp32 on most x86 parts without AMX and changes numerics.
        return Precision("fp32", None, False)
    if torch.cuda.is_bf16_supported():
        return Precision("bf16", torch.bfloat16, False)
    return Precision("fp16", torch.float16, True)


def autocast(device: Any, precision: Precision):
    """The autocast context for `precision` on `device` (a null context for fp32)."""
    import torch

    if precision.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.dtype)


def use_channels_last(device: Any) -> bool:
    """NHWC is what cuDNN's tensor-core convolutions want; on CPU it is not reliably faster."""
    return device.type == "cuda"


def to_device(x: Any, device: Any, channels_last: bool) -> Any:
    """Move a tensor to `device` (non-blocking from pinned memory), NHWC when asked and 4-D."""
    import torch

    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def sync(device: Any) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it (no-op on CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
