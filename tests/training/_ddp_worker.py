"""One rank of the DDP test: torchrun-style env vars, gloo on CPU, `fit` killed after epoch 2 then resumed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

EPOCHS, KILL_AFTER, SAMPLES = 3, 2, 96


class Killed(Exception):
    """Stands in for the job dying right after an epoch's state was written."""


def train(per_rank_batch: int, state: Path, interrupt: bool) -> tuple[torch.nn.Module, list[dict], list[str]]:
    """The same run in one process or in each rank: a BN-free student (GroupNorm), online KD, shifts.

    Returns:
        (student, the stats of each fit call, this process's log lines).
    """
    from _tiny import bars, conv_net

    from pipeline.datasets import ArrayDataset, make_loader
    from pipeline.training import ShiftAugment, fit

    x, y = bars(SAMPLES, 0)
    torch.manual_seed(100)
    teacher = conv_net(12, norm="gn")
    torch.manual_seed(0)
    student = conv_net(8, norm="gn")
    loader = make_loader(ArrayDataset(x, y), per_rank_batch, shuffle=True, seed=0)
    lines: list[str] = []
    kw = dict(epochs=EPOCHS, lr=0.01, weight_decay=1e-4, teacher=teacher, alpha=0.3, augment=ShiftAugment(8),
              device="cpu", resume_path=state, resume_key="ddp-test", seed=0, log=lines.append, tag="ddp", quiet=True)

    def die(epoch, _record):
        if interrupt and epoch == KILL_AFTER:
            raise Killed

    stats = []
    try:
        stats.append(fit(student, loader, on_epoch_end=die, **kw))
    except Killed:
        stats.append({"killed_after": KILL_AFTER})
        stats.append(fit(student, loader, **kw))
    return student, stats, lines


def main(rank: int, world: int, port: int, out: str, per_rank_batch: int) -> None:
    """Entry point for torch.multiprocessing: set torchrun's variables, init gloo through our helper, train."""
    import torch.distributed as dist

    from pipeline.training import init_distributed_from_env

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    got = init_distributed_from_env("cpu", timeout_s=60)
    try:
        student, stats, lines = train(per_rank_batch, Path(out) / "state.pt", interrupt=True)
    finally:
        backend = dist.get_backend()
        dist.destroy_process_group()
    torch.save(student.state_dict(), Path(out) / f"rank{rank}.pt")
    for s in stats:
        s.pop("history", None)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(
        {"init": list(got), "backend": backend, "stats": stats, "lines": lines}))
