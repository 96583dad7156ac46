"""What `fit` puts into its resume state, and how it picks a run back up from one."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def make_state(run: Any, key: str, epoch: int, epochs: int, done: bool, stopped: bool) -> dict[str, Any]:
    """The resume state after `epoch` epochs (tensors and plain values only: weights_only-loadable).

    Args:
        run: the loop's `_Run`.
        key: the caller's key.
        epoch: epochs completed.
        epochs: epochs planned.
        done: the run is over (last epoch, or stopped early): resuming returns these weights untouched.
        stopped: it stopped early at `epoch`.
    Returns:
        The state dict.
    """
    from pipeline.training.resume import rng_state

    return {
        "key": key, "epoch": epoch, "epochs": epochs, "steps": run.steps, "done": done,
        "stopped_early_at": epoch if stopped else None,
        "model": run.model.state_dict(),
        "adapters": run.adapters.state_dict() if run.adapters is not None else None,
        "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "rng": rng_state(), "best_metric": run.best, "best_epoch": run.best_epoch, "best_model": run.best_model,
        "bad_epochs": run.bad_epochs, "history": run.history,
    }


def resume_from(run: Any, path: Path | None, key: str, epochs: int, say, tag: str
                ) -> tuple[int, dict | None, int | None]:
    """Load the matching resume state at `path` into `run` (every rank loads it; rank 0 decides).

    Args:
        run: the loop's `_Run` (model, optimiser, scheduler, scaler, adapters are loaded in place).
        path: the resume file, or None.
        key: the caller's key; another key means start afresh.
        epochs: epochs planned (a state planned for another number is not resumed).
        say: rank 0's log callback.
        tag: prefix of log lines.
    Returns:
        (epochs already done, {"stopped_early_at": …} when the state is a finished run else None,
        the 1-based epoch resumed at or None).
    Raises:
        RuntimeError: ranks see different files at `path` (it must be on a filesystem all ranks share).
    """
    from pipeline.training.dist import all_reduce_sum, barrier, broadcast_int
    from pipeline.training.resume import load_matching, set_rng_state

    if path is None:
        return 0, None, None
    barrier()  # every rank reads the same, complete file
    state = load_matching(Path(path), key, say, tag)
    if state is not None and (state.get("epochs") != epochs or state.get("steps") != run.steps):
        say(f"[{tag}] {path} planned {state.get('epochs')} epochs x {state.get('steps')} steps, this run "
            f"{epochs} x {run.steps}: starting afresh (the file will be overwritten)")
        state = None
    mine = int(state["epoch"]) if state is not None else -1
    agreed = broadcast_int(mine, run.dev)
    if all_reduce_sum([float(mine != agreed)], run.dev)[0]:
        raise RuntimeError(f"resume state {path}: ranks disagree (rank 0 sees epoch {agreed}); put it on a "
                           "filesystem every rank shares")
    if state is None:
        return 0, None, None
    run.model.load_state_dict(state["model"])
    if run.adapters is not None and state.get("adapters") is not None:
        run.adapters.load_state_dict(state["adapters"])
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["scheduler"])
    if run.scaler is not None and state.get("scaler") is not None:
        run.scaler.load_state_dict(state["scaler"])
    run.best, run.best_epoch, run.best_model = state["best_metric"], state["best_epoch"], state["best_model"]
    run.bad_epochs, run.history = int(state["bad_epochs"]), list(state["history"])
    set_rng_state(state["rng"])
    k = int(state["epoch"])
    if state["done"]:
        say(f"[{tag}] {path} holds the finished run ({k}/{epochs} epochs, key {key!r}): reusing its weights")
        return k, {"stopped_early_at": state.get("stopped_early_at")}, None
    say(f"resuming {tag} at epoch {k + 1}/{epochs} from {path}")
    return k, None, k + 1
