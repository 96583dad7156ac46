"""Save and load models as plain tensors and numbers, safe to load with `weights_only=True`.

A pruned model no longer matches its factory's shapes, so besides the state_dict we record the
shape attributes pruning changes (channels, features, groups) per module. Loading builds the model
from its factory, applies those attributes, resizes parameters to the saved shapes and loads the
weights strictly. Nothing here unpickles code: files are read by `pipeline.safeload`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.fileio import atomic_path
from pipeline.safeload import read_tensors

FORMAT = "edgepipe-checkpoint-v1"
# Module attributes that structured pruning changes (torch.nn Conv/Linear/Norm/PReLU/Embedding).
SHAPE_ATTRS = (
    "in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
    "normalized_shape", "num_groups", "num_channels", "num_parameters", "embedding_dim", "num_embeddings",
)


def save_checkpoint(model: Any, path: Path, meta: dict | None = None) -> Path:
    """Write the model's weights and shape attributes atomically.

    Args:
        model: an nn.Module (pruned or not).
        path: destination `.pt`.
        meta: extra JSON-like info stored alongside (numbers and strings only).
    Returns:
        The path.
    """
    import torch

    shapes = {}
    for name, mod in model.named_modules():
        attrs = {a: _plain(getattr(mod, a)) for a in SHAPE_ATTRS if hasattr(mod, a)}
        attrs = {k: v for k, v in attrs.items() if v is not None}
        if attrs:
            shapes[name] = attrs
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "state_dict": state, "shapes": shapes, "meta": meta or {}}, tmp)
    return Path(path)


def _plain(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (tuple, list)) and all(isinstance(i, int) for i in v):
        return list(v)
    return None


def load_checkpoint(model: Any, path: Path) -> Any:
    """Load a checkpoint written by `save_checkpoint` into a freshly built `model` (reshaping it).

    Args:
        model: the unpruned model from the same factory.
        path: the `.pt` file.
    Returns:
        The model, reshaped and loaded, in eval mode.
    """
    import torch

    ckpt = read_tensors(Path(path), "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not an edgepipe checkpoint (format {FORMAT})")
    modules = dict(model.named_modules())
    for name, attrs in ckpt["shapes"].items():
        mod = modules.get(name)
        if mod is None:
            raise UserError(f"checkpoint {path} names module {name!r} that the model does not have")
        for a, v in attrs.items():
            setattr(mod, a, tuple(v) if isinstance(v, list) else v)
    state = ckpt["state_dict"]
    for key, tensor in state.items():
        mod_name, _, attr = key.rpartition(".")
        mod = modules.get(mod_name)
        cur = getattr(mod, attr, None) if mod is not None else None
        if isinstance(cur, torch.nn.Parameter) and cur.shape != tensor.shape:
            setattr(mod, attr, torch.nn.Parameter(torch.empty_like(tensor), requires_grad=cur.requires_grad))
        elif isinstance(cur, torch.Tensor) and cur.shape != tensor.shape:
            mod._buffers[attr] = torch.empty_like(tensor)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"checkpoint {path} does not fit the model: {str(e).splitlines()[0]}") from None
    return model.eval()

