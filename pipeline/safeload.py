"""Read tensors from disk without running code: safetensors, or `torch.load(weights_only=True)`.

The base layer's one loader of users' weight files, used by the model zoo (`pipeline.models`), the
checkpoints (`pipeline.models.checkpoint`) and the PyTorch runtime (`pipeline.runtimes.pyt`). A pickle
that would run code is refused by torch's weights-only unpickler, never executed. torch and
safetensors are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import UserError


def read_tensors(path: Path, what: str) -> Any:
    """Load a `.safetensors` file, or any other file with `torch.load(weights_only=True)` on the CPU.

    Args:
        path: the file.
        what: what the file is, for messages (e.g. "teacher.weights", "checkpoint").
    Returns:
        What the file holds: a dict of tensors for safetensors, plain containers of tensors and
        numbers otherwise.
    Raises:
        UserError: the file is unreadable, corrupt, or holds pickled code (naming `what` and the path).
    """
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors, zipfile and the weights-only unpickler all raise their own types
        raise UserError(f"cannot read {what} {path}: {e}") from None


def load_weights(model: Any, path: Path, role: str) -> None:
    """Load a state_dict into `model` safely (safetensors, or torch.load with weights_only=True).

    A file holding {"state_dict": {...}} (a training checkpoint) is accepted too.

    Args:
        model: the `nn.Module` to fill.
        path: a `.safetensors` file or a `torch.save`d state_dict.
        role: whose weights these are ("teacher", "student", "model"), for messages.
    Raises:
        UserError: missing/corrupt file or keys/shapes that do not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{role}.weights file not found: {path}")
    state = read_tensors(path, f"{role}.weights")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{role}.weights: {path} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{role}.weights {path} do not fit the {role} model: {str(e).splitlines()[0]}") from None
