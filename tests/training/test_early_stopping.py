"""Early stopping: `patience` epochs without a better val accuracy stop the run and restore the best weights."""

from __future__ import annotations

import pytest
import torch

from pipeline.datasets import ArrayDataset, make_loader
from pipeline.training import fit


class ScriptedVal:
    """Val batches labelled from the model's own predictions, so val accuracy follows `script` exactly."""

    def __init__(self, model, x, script):
        self.model, self.x, self.script, self.calls = model, torch.as_tensor(x), list(script), 0

    def __iter__(self):
        acc = self.script[self.calls]
        self.calls += 1
        with torch.no_grad():
            pred = self.model(self.x).argmax(1)
        right = round(acc * len(pred))
        y = pred.clone()
        y[right:] = (pred[right:] + 1) % 3
        yield self.x, y


def test_patience_stops_and_restores_the_best_epoch(bars_data, make_net):
    x, y = bars_data(64, 0)
    vx, _ = bars_data(20, 1)
    torch.manual_seed(0)
    model = make_net(8)
    val = ScriptedVal(model, vx, [0.5, 0.9, 0.7, 0.6, 1.0, 1.0])
    snapshots = {}

    def keep(epoch, record):
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    lines: list[str] = []
    stats = fit(model, make_loader(ArrayDataset(x, y), 16), epochs=6, lr=0.01, val_loader=val, patience=2,
                device="cpu", log=lines.append, tag="es", quiet=True, on_epoch_end=keep)
    assert stats["stopped_early_at"] == 4 and stats["best_epoch"] == 2 and stats["epochs"] == 4
    assert stats["val_accuracy"] == pytest.approx(0.9) and val.calls == 4
    assert any("stopped early at epoch 4/6" in ln and "restored epoch 2" in ln for ln in lines)
    # Epoch 4's snapshot was taken after the restore; epoch 3's is what training had reached.
    final = model.state_dict()
    assert all(torch.equal(final[k], snapshots[2][k]) for k in final)
    assert not all(torch.equal(snapshots[3][k], snapshots[2][k]) for k in final)


def test_patience_needs_a_val_loader(bars_data, make_net):
    x, y = bars_data(32, 0)
    with pytest.raises(ValueError, match="patience 2: must be an integer >= 1, with a val_loader"):
        fit(make_net(8), make_loader(ArrayDataset(x, y), 16), epochs=2, lr=0.01, patience=2, device="cpu")
