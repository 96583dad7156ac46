"""Resume: a run killed after epoch 2 and restarted ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.datasets import ArrayDataset, make_loader
from pipeline.training import ShiftAugment, fit
from pipeline.training.resume import rng_state, save_atomic, set_rng_state


class Killed(Exception):
    """Stands in for the process dying right after an epoch's state was written."""


def _augment(xb):
    """Draws from all three RNGs the state carries: torch (shift), numpy (noise), Python (scale)."""
    xb = ShiftAugment(8)(xb)
    noise = torch.from_numpy(np.random.normal(0, 0.05, xb.shape).astype(np.float32))
    return xb * (1 + 0.1 * random.random()) + noise


def _run(bars_data, make_net, state: Path, key: str, init_seed: int = 0, log=None, on_epoch_end=None) -> tuple:
    x, y = bars_data(128, 0)
    vx, vy = bars_data(64, 1)
    torch.manual_seed(100)
    teacher = make_net(12)
    torch.manual_seed(init_seed)
    student = make_net(8)
    # shuffle=True draws each epoch's order from the global torch RNG: the state must carry it.
    loader = DataLoader(ArrayDataset(x, y), batch_size=16, shuffle=True)
    stats = fit(student, loader, epochs=3, lr=0.01, weight_decay=1e-4, teacher=teacher, alpha=0.3,
                augment=_augment, features=[("0", "3", 0.5)], val_loader=make_loader(ArrayDataset(vx, vy), 64),
                patience=5, device="cpu", resume_path=state, resume_key=key, seed=0, log=log, tag="test",
                quiet=True, on_epoch_end=on_epoch_end)
    return student, stats


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    return max(float((sa[k].double() - sb[k].double()).abs().max()) if sa[k].numel() else 0.0 for k in sa)


def test_killed_run_resumes_at_the_next_epoch_and_matches_an_uninterrupted_run(tmp_path, bars_data, make_net):
    full, full_stats = _run(bars_data, make_net, tmp_path / "full.pt", "k")

    def die_after_2(epoch, _record):
        if epoch == 2:
            raise Killed

    state = tmp_path / "state" / "distill.pt"
    with pytest.raises(Killed):
        _run(bars_data, make_net, state, "k", on_epoch_end=die_after_2)
    saved = torch.load(state, weights_only=True)  # plain tensors and values only
    assert (saved["epoch"], saved["key"], saved["done"]) == (2, "k", False)
    assert isinstance(saved["rng"]["numpy"][1], list) and isinstance(saved["rng"]["numpy"][1][0], int)

    lines: list[str] = []
    # A different initialisation: only the resume state can make the result match.
    resumed, stats = _run(bars_data, make_net, state, "k", init_seed=7, log=lines.append)
    assert f"resuming test at epoch 3/3 from {state}" in lines
    assert stats["resumed_at_epoch"] == 3 and [h["epoch"] for h in stats["history"]] == [1, 2, 3]
    diff = _max_diff(resumed, full)
    print(f"max abs weight difference, resumed vs uninterrupted: {diff}")
    assert diff == 0.0
    assert all(torch.equal(v, full.state_dict()[k]) for k, v in resumed.state_dict().items())
    assert stats["history"][-1]["loss"] == full_stats["history"][-1]["loss"]
    assert sorted(p.name for p in state.parent.iterdir()) == ["distill.pt"]  # no temp files left


def test_a_changed_key_starts_afresh_and_overwrites(tmp_path, bars_data, make_net):
    state = tmp_path / "s.pt"

    def die_after_1(epoch, _record):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        _run(bars_data, make_net, state, "old", on_epoch_end=die_after_1)
    lines: list[str] = []
    fresh, stats = _run(bars_data, make_net, state, "new", log=lines.append)
    assert any("key changed" in ln and "starting afresh" in ln and "'old'" in ln for ln in lines), lines
    assert not any(ln.startswith("resuming") for ln in lines)
    assert stats["resumed_at_epoch"] is None and stats["resume_writes"] == 3
    assert torch.load(state, weights_only=True)["key"] == "new"
    # Rerunning a finished run with the same key returns its weights without training.
    lines.clear()
    again, stats = _run(bars_data, make_net, state, "new", init_seed=3, log=lines.append)
    assert any("holds the finished run" in ln for ln in lines) and stats["resume_writes"] == 0
    assert _max_diff(again, fresh) == 0.0


def test_atomic_write_keeps_the_old_file_when_saving_fails(tmp_path):
    path = tmp_path / "s.pt"
    save_atomic({"key": "a", "w": torch.ones(3)}, path)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        save_atomic({"key": "b", "bad": lambda: None}, path)  # a lambda cannot be pickled
    assert torch.load(path, weights_only=True)["key"] == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]


def test_rng_state_round_trips_through_weights_only(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    save_atomic({"rng": rng_state()}, tmp_path / "r.pt")
    want = (torch.rand(2), np.random.rand(2), random.random())
    set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    got = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]
