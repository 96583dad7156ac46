"""Progress: a log line per epoch always; a rich bar only on a terminal and not quiet."""

from __future__ import annotations

import re
import sys

from pipeline.datasets import ArrayDataset, make_loader
from pipeline.training import fit
from pipeline.training.progress import EpochProgress


def test_one_log_line_per_epoch_without_a_terminal(bars_data, make_net):
    x, y = bars_data(32, 0)
    lines: list[str] = []
    fit(make_net(8), make_loader(ArrayDataset(x, y), 16), epochs=2, lr=0.01, device="cpu", tag="t",
        val_loader=make_loader(ArrayDataset(x, y), 32), log=lines.append)
    assert len(lines) == 2
    for k, ln in enumerate(lines, 1):
        assert re.fullmatch(rf"\[t\] epoch {k}/2 loss \d+\.\d{{4}} val_acc \d+\.\d% img/s [\d,]+", ln), ln


def test_bar_only_on_a_terminal_and_not_quiet(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert EpochProgress("t", 2, 5, enabled=True)._bar is None
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert EpochProgress("t", 2, 5, enabled=False)._bar is None
    bar = EpochProgress("t", 2, 5, enabled=True)
    assert bar._bar is not None
    bar.start(1)
    for _ in range(5):
        bar.advance(16)
    bar.close()
