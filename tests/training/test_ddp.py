"""DDP through `fit`: 2 gloo processes on CPU match a 1-process run with the same global batch.

BatchNorm: each rank would normalise over its own half batch (and SyncBatchNorm refuses CPU tensors), so
the models here use GroupNorm, which is per-image: the two runs then compute the same function and differ
only by float summation order (the gradient all-reduce). On CUDA, `fit` converts BatchNorm to
SyncBatchNorm while training (sync_batchnorm=True) and back afterwards.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

TOLERANCE = 1e-5  # max abs weight difference after 3 epochs (18 AdamW steps, weights of order 0.1-1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch has no torch.distributed")
def test_two_gloo_ranks_match_one_process_and_only_rank0_writes(tmp_path):
    import _ddp_worker as worker

    per_rank = 8
    ctx = mp.start_processes(worker.main, args=(2, _free_port(), str(tmp_path), per_rank), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the DDP processes did not finish within 120 s")

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["init"] for r in ranks] == [[0, 2, 0], [1, 2, 1]] and ranks[0]["backend"] == "gloo"
    for r in ranks:  # every rank was killed after epoch 2, loaded the state, and resumed at epoch 3
        first, second = r["stats"][0], r["stats"][1]
        assert first == {"killed_after": 2} and second["resumed_at_epoch"] == 3 and second["world_size"] == 2
    # Only rank 0 writes the state and logs.
    assert ranks[0]["stats"][1]["resume_writes"] == 1 and ranks[1]["stats"][1]["resume_writes"] == 0
    assert ranks[1]["lines"] == [] and f"resuming ddp at epoch 3/3 from {tmp_path / 'state.pt'}" in ranks[0]["lines"]
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert (state["epoch"], state["done"], state["key"]) == (3, True, "ddp-test")

    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # DDP keeps the replicas identical

    single, stats, _ = worker.train(2 * per_rank, tmp_path / "single.pt", interrupt=False)
    assert stats[0]["world_size"] == 1
    ref = single.state_dict()
    diff = max(float((w0[k] - ref[k]).abs().max()) for k in ref)
    print(f"DDP (2 x batch {per_rank}) vs 1 process (batch {2 * per_rank}): max abs weight diff {diff:.3g}")
    assert diff < TOLERANCE
