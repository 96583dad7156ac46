"""The torchvision-layout built-ins load torchvision checkpoints strictly, without torchvision installed.

`torchvision_state_dicts.json` was generated from torchvision's own model definitions
(torchvision/models/resnet.py and mobilenetv2.py in pytorch/vision, run with torch 2.13): every
state_dict key and shape in order, the parameter count (equal to torchvision's published
`num_params`: resnet18 11,689,512, resnet50 25,557,032, mobilenet_v2 3,504,872), and the first
logits of that torchvision model for fixed random weights (`_det_state`) on a fixed 64x64 input,
so a stride or padding in the wrong place fails here even when every shape fits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.models import tv_mobilenet, tv_resnet

REF = json.loads((Path(__file__).parent / "torchvision_state_dicts.json").read_text())


def _build(tag: str, **extra):
    name = tag.split("@")[0]
    mod = tv_mobilenet if name.startswith("mobilenet") else tv_resnet
    return getattr(mod, name)(**REF[tag]["kwargs"], **extra)


def _det_state(keys_shapes, seed=0):
    """The fixed random weights the reference logits were computed with (same order of draws)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in keys_shapes:
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[k] = torch.randn(shape, generator=g) * 0.1
    return sd


@pytest.mark.parametrize("tag", sorted(REF))
def test_state_dict_keys_shapes_and_outputs_match_torchvision(tag):
    ref = REF[tag]
    model = _build(tag)
    sd = model.state_dict()
    assert [[k, list(v.shape)] for k, v in sd.items()] == ref["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"]
    # A torchvision-shaped checkpoint (as `torch.save(tv_model.state_dict())` gives) loads strictly.
    model.load_state_dict(_det_state(ref["state_dict"]), strict=True)
    model.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)[0]
    scale = ref["logits_absmax"]
    assert torch.allclose(y[:8], torch.tensor(ref["logits_head"]), atol=1e-4 * scale, rtol=1e-4)
    assert abs(float(y.abs().max()) - scale) <= 1e-4 * scale


def test_resnet50_key_counts_and_named_samples():
    sd = tv_resnet.resnet50().state_dict()
    assert len(sd) == 320  # 161 parameters + 159 BatchNorm buffers (running mean/var, num_batches_tracked)
    samples = {
        "conv1.weight": (64, 3, 7, 7), "bn1.running_var": (64,), "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer4.2.bn3.num_batches_tracked": (), "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "fc.weight": (1000, 2048), "fc.bias": (1000,),
    }
    for k, shape in samples.items():
        assert tuple(sd[k].shape) == shape, k
    assert "layer1.1.downsample.0.weight" not in sd


def test_mobilenet_v2_named_samples():
    sd = tv_mobilenet.mobilenet_v2().state_dict()
    samples = {
        "features.0.0.weight": (32, 3, 3, 3), "features.1.conv.0.0.weight": (32, 1, 3, 3),
        "features.1.conv.1.weight": (16, 32, 1, 1), "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.17.conv.3.running_mean": (320,), "features.18.0.weight": (1280, 320, 1, 1),
        "classifier.1.weight": (1000, 1280),
    }
    for k, shape in samples.items():
        assert tuple(sd[k].shape) == shape, k


def test_other_classes_and_channels_change_only_the_ends():
    m = tv_resnet.resnet18(num_classes=5, in_channels=1)
    tv = {k: v for k, v in REF["resnet18"]["state_dict"]}
    diff = [k for k, v in m.state_dict().items() if list(v.shape) != tv[k]]
    assert sorted(diff) == ["conv1.weight", "fc.bias", "fc.weight"]
    assert m(torch.zeros(2, 1, 32, 32)).shape == (2, 5)
    mb = tv_mobilenet.mobilenet_v2(num_classes=3, in_channels=1)
    assert mb.eval()(torch.zeros(1, 1, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize("call", [
    lambda: tv_resnet.resnet(20), lambda: tv_resnet.resnet50(num_classes=0),
    lambda: tv_mobilenet.mobilenet_v2(width_mult=0), lambda: tv_mobilenet.mobilenet_v2(in_channels=2.5),
])
def test_bad_arguments_say_what_is_allowed(call):
    with pytest.raises(ValueError, match="must be|allowed"):
        call()


def test_checkpoint_round_trip_through_torch_save(tmp_path):
    """The file form users bring: torch.save(state_dict) reloaded with weights_only=True."""
    src = tv_mobilenet.mobilenet_v2(width_mult=0.5)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = tv_mobilenet.mobilenet_v2(width_mult=0.5)
    dst.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True), strict=True)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(src.eval()(x), dst.eval()(x))
