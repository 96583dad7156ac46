"""Resume states for long training runs: written atomically each epoch, loadable with weights_only=True.

A state holds the model, optimiser, scheduler, GradScaler, every RNG (torch CPU and CUDA, numpy's
global generator, Python's `random`), the epoch, the best metric and the caller's `key`. Everything
in it is a tensor or a plain Python value, so `torch.load(..., weights_only=True)` accepts it: the
numpy RNG state is stored as ints and lists, not as numpy objects (which weights_only refuses).
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMAT = 1  # bump when the state's layout changes: an older file is then ignored, not misread


def rng_state() -> dict[str, Any]:
    """Every RNG the loop (or a caller's augmentation) may draw from, as weights_only-loadable values."""
    import torch

    state: dict[str, Any] = {"torch": torch.random.get_rng_state(), "python": _plain(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:  # numpy is optional on a bare GPU box
        return state
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = [str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured (CUDA only when this machine has as many GPUs)."""
    import torch

    torch.random.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _plain(v: Any) -> Any:
    """Tuples to lists, recursively (Python's RNG state is a nested tuple of ints)."""
    return [_plain(x) for x in v] if isinstance(v, (tuple, list)) else v


def save_atomic(state: dict[str, Any], path: Path) -> Path:
    """Write `state` with torch.save so that `path` is always either the old file or the complete new one.

    Writes a temp file in the same folder (same filesystem, so `os.replace` is atomic), fsyncs it,
    replaces `path`, then fsyncs the folder so the rename itself survives a power cut.

    Args:
        state: the dict to save.
        path: destination; its folder is created.
    Returns:
        `path`.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({**state, "format": FORMAT}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open a folder: the rename is still done
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def load_matching(path: Path | None, key: str, log: Callable[[str], None], tag: str) -> dict | None:
    """The resume state at `path` if it was written for `key`; None (and a log line saying why) otherwise.

    Args:
        path: the resume file (may be absent), or None for no resuming.
        key: the caller's key (e.g. the stage cache key); a different key means different work.
        log: where the "starting afresh" reason goes.
        tag: prefix of log lines.
    Returns:
        The state dict (tensors on CPU), or None to start afresh.
    """
    import torch

    if path is None or not Path(path).exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated by something other than us, or another program's file
        log(f"[{tag}] cannot read the resume state {path} ({type(e).__name__}: {str(e)[:200]}); starting afresh")
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        log(f"[{tag}] {path} is not a resume state of format {FORMAT}; starting afresh")
        return None
    if state.get("key") != key:
        log(f"[{tag}] {path} was written for key {state.get('key')!r}, not {key!r}: the key changed, "
            "starting afresh (the file will be overwritten)")
        return None
    return state
