"""On a CUDA GPU: online KD with AMP (bf16 and forced fp16 + GradScaler), channels_last, hints, resume, eval.

Skipped without CUDA. Also runs as a script (`python tests/training/test_cuda.py`) on a GPU box without pytest.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from unittest import mock

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.datasets import ArrayDataset, make_loader  # noqa: E402
from pipeline.training.eval import evaluate_loader, predict_logits_loader  # noqa: E402
from pipeline.training.loop import fit  # noqa: E402

try:
    import pytest

    pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
except ImportError:  # run as a script on a machine without pytest
    pass


class Killed(Exception):
    pass


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k: a bright bar at row 2k of channel 0 (torch only: numpy may be absent on a GPU box)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 2, 8, 8, generator=g) * 0.3
    x[torch.arange(n), 0, 2 * y, :] += 1.5
    return x, y


def _noise(x: torch.Tensor) -> torch.Tensor:
    """A label-preserving augmentation drawn on the device (a shift would move the bar to another class's row)."""
    return x + 0.1 * torch.randn_like(x)


def _net(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, 3))


def _kd_on_cuda(tmp: Path, bf16: bool) -> None:
    x, y = _data(256, 0)
    vx, vy = _data(128, 1)
    train, val = make_loader(ArrayDataset(x, y), 32, seed=0), make_loader(ArrayDataset(vx, vy), 64, shuffle=False)
    with mock.patch.object(torch.cuda, "is_bf16_supported", return_value=bf16):
        torch.manual_seed(0)
        teacher = _net(16)
        fit(teacher, train, epochs=3, lr=0.01, device="cuda", quiet=True)
        assert evaluate_loader(teacher, val, "cuda") > 0.9
        student, state = _net(8), tmp / f"state-{bf16}.pt"
        kw = dict(epochs=3, lr=0.01, teacher=teacher, augment=_noise, features=[("0", "3", 0.5)],
                  val_loader=val, patience=3, device="cuda", resume_path=state, resume_key="k", quiet=True)

        def die(epoch, _rec):
            if epoch == 1:
                raise Killed

        try:
            fit(student, train, on_epoch_end=die, **kw)
        except Killed:
            pass
        lines: list[str] = []
        stats = fit(student, train, log=lines.append, **kw)
    want = "bf16" if bf16 else "fp16"
    assert stats["precision"] == want and stats["channels_last"] and stats["device"].startswith("cuda"), stats
    assert stats["resumed_at_epoch"] == 2 and any(ln.startswith("resuming train at epoch 2/3") for ln in lines)
    saved = torch.load(state, weights_only=True)
    assert (saved["scaler"] is not None) == (want == "fp16")
    # fit puts the models back where they were: CPU, contiguous.
    for m in (student, teacher):
        assert all(p.device.type == "cpu" and p.is_contiguous() for p in m.parameters())
    assert evaluate_loader(student, val, "cuda") > 0.6
    logits = predict_logits_loader(student, val, "cuda")
    assert logits.shape == (128, 3) and str(logits.dtype) == "float32"
    print(f"{want}: {stats['images_per_s']:.0f} img/s, best val {stats['best_val_accuracy']:.3f}, resumed OK")


def test_kd_bf16_on_cuda(tmp_path):
    _kd_on_cuda(tmp_path, bf16=True)


def test_kd_fp16_with_grad_scaler_on_cuda(tmp_path):
    _kd_on_cuda(tmp_path, bf16=False)


if __name__ == "__main__":
    failed = 0
    for fn in (test_kd_bf16_on_cuda, test_kd_fp16_with_grad_scaler_on_cuda):
        try:
            with tempfile.TemporaryDirectory() as d:
                fn(Path(d))
            print(f"PASS {fn.__name__}")
        except Exception as e:
            failed += 1
            print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}")
            import traceback

            traceback.print_exc()
    sys.exit(1 if failed else 0)
