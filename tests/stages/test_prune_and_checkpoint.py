"""Torch-Pruning keeps coupled layers consistent; pruned checkpoints reload exactly and safely."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp

from pipeline.models.checkpoint import load_checkpoint, save_checkpoint
from pipeline.models.mobilenetv2 import make_mobilenetv2_student
from pipeline.stages.common import classifier_layers


def prune(model, ratio, example):
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio,
                                  ignored_layers=classifier_layers(model, 3 if hasattr(model, "head") else 10))
    pruner.step()
    return model.eval()


def test_se_and_depthwise_residual_teacher_prunes_consistently(external_models, tmp_path):
    model = external_models.make_teacher(3, 2).eval()
    x = torch.randn(4, 2, 8, 8)
    before = sum(p.numel() for p in model.parameters())
    prune(model, 0.5, x)
    after = sum(p.numel() for p in model.parameters())
    assert after < 0.6 * before
    block = model.blocks[0]
    c = block.dw.out_channels
    # residual add, depthwise groups, BN and squeeze-excite all agree on the pruned width
    assert block.dw.groups == c == block.pw.out_channels == block.bn2.num_features == block.se.fc2.out_channels
    assert model.stem[0].out_channels == c
    assert model.head.out_features == 3  # the classifier's outputs are never pruned
    assert model(x).shape == (4, 3)
    path = save_checkpoint(model, tmp_path / "t.pt")
    again = load_checkpoint(external_models.make_teacher(3, 2), path)
    assert torch.equal(again(x), model(x))


def test_mobilenet_student_checkpoint_round_trip_is_weights_only(tmp_path):
    model = make_mobilenetv2_student().eval()
    x = torch.randn(2, 1, 16, 16)
    prune(model, 0.5, x)
    path = save_checkpoint(model, tmp_path / "s.pt", {"role": "student"})
    # the file loads with weights_only=True: no pickled code inside
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "edgepipe-checkpoint-v1" and raw["meta"] == {"role": "student"}
    again = load_checkpoint(make_mobilenetv2_student(), path)
    assert torch.equal(again(x), model(x))


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    from pipeline.errors import UserError

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="bad.pt"):
        load_checkpoint(make_mobilenetv2_student(), bad)
