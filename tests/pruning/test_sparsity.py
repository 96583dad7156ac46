"""2:4 sparsity: torch.ao's masks along the input-channel axis, kept through squash and ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from pipeline.pruning import sparsity
from pipeline.pruning.latency import export_bytes


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, groups=16), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 4)).eval()


def test_mask_keeps_the_two_largest_of_every_four_input_channels() -> None:
    w = torch.randn(5, 8, 3, 3)
    mask = sparsity.mask_2_4(w)
    assert mask.shape == w.shape
    # groups of 4 consecutive C for each (k, r, s): exactly 2 kept, and they are the 2 largest |w|
    groups_w = w.abs().permute(0, 2, 3, 1).reshape(-1, 4)
    groups_m = mask.permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.equal(groups_m.sum(1), torch.full((groups_m.shape[0],), 2.0))
    kept = torch.sort(groups_w * groups_m, dim=1).values[:, 2:]
    assert torch.allclose(kept, torch.sort(groups_w, dim=1).values[:, 2:])
    # a mask along the wrong axis (R*S blocks) would not be 2:4 along C
    wrong = torch.ones(5, 8, 3, 3)
    wrong[:, :, 0, :2] = 0
    assert not sparsity._rows_are_2_4(sparsity._as_rows(wrong).numpy())


def test_masks_stay_fixed_through_training_and_squash() -> None:
    model = _net()
    names = sparsity.apply_2_4(model)
    assert names == ["3", "9"]  # the 3-channel stem and the depthwise conv are not eligible
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 3, 10, 10)).square().mean().backward()
        opt.step()
    sparsity.squash(model)
    sd = model.state_dict()
    assert "3.weight" in sd and not any("parametrizations" in k for k in sd)
    assert sparsity.is_2_4_sparse(sd)


def test_exported_onnx_weights_are_2_4_along_input_channels() -> None:
    model = _net()
    dense = export_bytes(model, (3, 10, 10))
    assert not sparsity.is_2_4_sparse(dense)
    sparsity.apply_2_4(model)
    sparsity.squash(model)
    model[4].running_var.fill_(3.0)  # BatchNorm folded into the conv at export scales rows, keeps zeros
    data = export_bytes(model, (3, 10, 10))
    assert sparsity.is_2_4_sparse(data)
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(data)
    conv = next(n for n in m.graph.node if n.op_type == "Conv" and n.input[1] in
                {i.name for i in m.graph.initializer if len(i.dims) == 4 and i.dims[1] == 8})
    w = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == conv.input[1]))
    blocks = np.transpose(w, (0, 2, 3, 1)).reshape(-1, 2, 4)
    assert (np.count_nonzero(blocks, axis=-1) == 2).all()


@pytest.mark.parametrize("bad", ["conv", "linear"])
def test_one_dense_layer_fails_the_check(bad: str) -> None:
    model = _net()
    sparsity.apply_2_4(model)
    sparsity.squash(model)
    with torch.no_grad():
        (model[3].weight[0, :4, 0, 0] if bad == "conv" else model[9].weight[0, :4]).fill_(1.0)
    assert not sparsity.is_2_4_sparse(model.state_dict())
    assert not sparsity.is_2_4_sparse(export_bytes(model, (3, 10, 10)))


def test_int8_qdq_weights_keep_the_pattern(tmp_path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model = _net()
    sparsity.apply_2_4(model)
    sparsity.squash(model)
    src, dst = tmp_path / "m.onnx", tmp_path / "q.onnx"
    src.write_bytes(export_bytes(model, (3, 10, 10)))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": np.random.default_rng(i).standard_normal((1, 3, 10, 10), np.float32)}
                                 for i in range(4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QInt8, per_channel=True)
    assert sparsity.is_2_4_sparse(dst)
    assert not sparsity.is_2_4_sparse(export_bytes(_net(), (3, 10, 10)))
