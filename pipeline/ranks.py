"""Running the pipeline under torchrun: which rank does what.

`edgepipe run --nproc N` (or `torchrun --nproc-per-node N -m pipeline run ...`) starts N processes. The
training stages (those marked `trains` in the registry) run on every rank, with DistributedDataParallel and a
DistributedSampler inside `pipeline.training.fit`; the config's `batch_size` stays the *global* batch (each
rank takes batch_size / N), so N processes see the same images per optimiser step as one. Only rank 0 writes
the stage folder, its cache record, the shared store and the manifest: the other ranks work in a private
scratch folder that is deleted afterwards, and read rank 0's record when the stage is done. Every stage after
the last training stage runs once, on rank 0; the other ranks leave the process group and exit 0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

# rank 0 writes its exit code here (set by `launch`), so the launcher can return 1 or 2 instead of torchrun's 1
EXIT_CODE_FILE_ENV = "EDGEPIPE_EXIT_CODE_FILE"


def start(device: str) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment (no-op without one).

    Args:
        device: the config's `device` (picks gloo on CPU, NCCL on CUDA).
    Returns:
        (rank, world_size); (0, 1) outside torchrun.
    Raises:
        UserError: a torchrun environment that is incomplete.
    """
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return 0, 1
    from pipeline.training import init_distributed_from_env

    try:
        rank, world, _ = init_distributed_from_env(device)
    except ValueError as e:
        raise UserError(str(e)) from None
    return rank, world


def leave() -> None:
    """Leave the process group (after the last training stage): later stages run on rank 0 alone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def agree(flag: bool) -> bool:
    """Rank 0's `flag` on every rank (e.g. whether a stage is cached), so all ranks take the same branch."""
    import torch
    import torch.distributed as dist

    from pipeline.training.dist import broadcast_int

    # NCCL broadcasts CUDA tensors only: this rank's GPU (torchrun's LOCAL_RANK, set when the group started)
    nccl = dist.is_initialized() and dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else "cpu"
    return bool(broadcast_int(int(flag), device))


def wait_for_all() -> None:
    """A barrier over every rank (no-op in one process)."""
    from pipeline.training.dist import barrier

    barrier()


def scratch(work: Path, rank: int) -> Path:
    """A private, empty folder for a rank other than 0 to run a training stage in (its files are dropped)."""
    d = work.parent / f"{work.name}.rank{rank}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def launch(nproc: int, argv: list[str]) -> int:
    """Start `python -m pipeline ARGV` on `nproc` local processes with torchrun (torch.distributed.run).

    Args:
        nproc: processes on this machine (one per GPU on a GPU machine).
        argv: the `edgepipe` arguments for every rank (without --nproc).
    Returns:
        Rank 0's exit code (0, 1 budget exceeded, 2 user error), or torchrun's when rank 0 never got to write it.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgepipe-ranks-") as tmp:
        code_file = Path(tmp) / "rank0.exit"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "pipeline", *argv]
        env = dict(os.environ, **{EXIT_CODE_FILE_ENV: str(code_file)})
        rc = subprocess.call(cmd, env=env)  # an argv list: nothing the user typed passes through a shell
        if code_file.is_file():
            try:
                return int(code_file.read_text().strip())
            except ValueError:
                pass
        return rc


def record_exit_code(rc: int) -> None:
    """On rank 0 under `launch`, write the exit code where the launcher reads it."""
    path = os.environ.get(EXIT_CODE_FILE_ENV)
    if path and os.environ.get("RANK", "0") == "0":
        try:
            Path(path).write_text(str(rc))
        except OSError:
            pass


def worker_result(rank: int, world: int) -> dict[str, Any]:
    """What `run_pipeline` returns on a rank other than 0 (rank 0 returns the manifest)."""
    return {"rank": rank, "world_size": world, "role": "training worker; rank 0 writes the artifacts"}
