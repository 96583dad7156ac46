"""Device strings, precision choice, and what the stats record."""

from __future__ import annotations

import pytest
import torch

from pipeline.datasets import ArrayDataset, make_loader
from pipeline.errors import UserError
from pipeline.training import fit, resolve_device
from pipeline.training.device import choose_precision


@pytest.fixture()
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cuda_asked_but_absent_is_a_clear_error(no_cuda):
    for value in ("cuda", "cuda:1", "CUDA:0"):
        want = rf"device '{value}' asks for CUDA.*no CUDA GPU.*allowed: \"auto\", \"cpu\""
        with pytest.raises(UserError, match=want):
            resolve_device(value)


@pytest.mark.parametrize("value", ["tpu", "cuda:x", "gpu", ""])
def test_unknown_device_strings_name_the_allowed_ones(value):
    with pytest.raises(UserError, match=rf"device '{value}' is not a device; allowed: \"auto\", \"cpu\", \"cuda\""):
        resolve_device(value)


def test_auto_is_cpu_without_cuda(no_cuda):
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")


def test_precision_per_device(monkeypatch):
    assert choose_precision(torch.device("cpu")).name == "fp32"
    assert choose_precision(torch.device("cuda"), amp=False).name == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose_precision(torch.device("cuda")).name == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    p = choose_precision(torch.device("cuda"))
    assert (p.name, p.dtype, p.needs_scaler) == ("fp16", torch.float16, True)


def test_fit_refuses_cuda_without_cuda_before_training(no_cuda, bars_data, make_net):
    x, y = bars_data(16, 0)
    with pytest.raises(UserError, match="device 'cuda' asks for CUDA"):
        fit(make_net(8), make_loader(ArrayDataset(x, y), 8), epochs=1, lr=0.01, device="cuda")


def test_stats_record_device_precision_threads(bars_data, make_net):
    x, y = bars_data(32, 0)
    stats = fit(make_net(8), make_loader(ArrayDataset(x, y), 16), epochs=1, lr=0.01, device="cpu", quiet=True)
    assert (stats["device"], stats["precision"], stats["threads"]) == ("cpu", "fp32", torch.get_num_threads())
    assert stats["world_size"] == 1 and stats["images_per_s"] > 0 and stats["channels_last"] is False


def test_sync_batchnorm_conversion_round_trips(make_net):
    from pipeline.training.dist import convert_sync_batchnorm, revert_sync_batchnorm

    model = make_net(8)
    model[1].running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    originals = convert_sync_batchnorm(model)
    assert originals == {"1": torch.nn.BatchNorm2d} and isinstance(model[1], torch.nn.SyncBatchNorm)
    revert_sync_batchnorm(model, originals)
    assert type(model[1]) is torch.nn.BatchNorm2d
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
