"""Users' weights load safely: state dicts and safetensors work, pickled code is never run."""

from __future__ import annotations

import pickle

import pytest
import torch

from pipeline.config import FactoryModel
from pipeline.errors import UserError
from pipeline.models import build_model, load_weights
from pipeline.models.resnet import make_resnet_teacher


class Boom:
    def __reduce__(self):
        return (open, ("/tmp/edgepipe-pwned", "w"))  # would create a file if unpickled


def test_state_dict_and_safetensors_load(tmp_path):
    from safetensors.torch import save_file

    src = make_resnet_teacher(width=0.25).eval()
    torch.save(src.state_dict(), tmp_path / "w.pt")
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    x = torch.randn(2, 1, 8, 8)
    for name in ("w.pt", "w.safetensors"):
        dst = make_resnet_teacher(width=0.25).eval()
        load_weights(dst, tmp_path / name, "teacher")
        assert torch.equal(dst(x), src(x))


def test_pickled_code_is_refused_not_run(tmp_path):
    import os

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Boom()}, f)
    if os.path.exists("/tmp/edgepipe-pwned"):
        os.remove("/tmp/edgepipe-pwned")
    with pytest.raises(UserError, match="evil.pt"):
        load_weights(make_resnet_teacher(width=0.25), path, "teacher")
    assert not os.path.exists("/tmp/edgepipe-pwned")


def test_weights_of_another_model_are_named(tmp_path):
    torch.save(make_resnet_teacher(width=0.5).state_dict(), tmp_path / "w.pt")
    with pytest.raises(UserError, match="do not fit the teacher model"):
        load_weights(make_resnet_teacher(width=0.25), tmp_path / "w.pt", "teacher")


def test_factory_errors_are_user_errors(tmp_path):
    (tmp_path / "m.py").write_text("def make():\n    return 3\n")
    with pytest.raises(UserError, match="cannot import module 'nope'"):
        build_model(FactoryModel(factory="nope:make"), 10, 1, tmp_path, "teacher")
    with pytest.raises(UserError, match="has no function 'other'"):
        build_model(FactoryModel(factory="m:other"), 10, 1, tmp_path, "teacher")
    with pytest.raises(UserError, match="returned int, not a torch.nn.Module"):
        build_model(FactoryModel(factory="m:make"), 10, 1, tmp_path, "student")


def test_factory_file_beside_config_wins_over_an_imported_module_of_the_same_name(tmp_path, monkeypatch):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "models", types.ModuleType("models"))  # someone else's `models`
    (tmp_path / "models.py").write_text(
        "import torch.nn as nn\n\ndef make_teacher(num_classes):\n    return nn.Linear(4, num_classes)\n"
    )
    model = build_model(FactoryModel(factory="models:make_teacher"), 3, 1, tmp_path, "teacher")
    assert model.out_features == 3


def test_one_safe_loader_below_models_and_runtimes(tmp_path):
    """pipeline.safeload (base layer) is the loader; pipeline.models re-exports it, checkpoints use it."""
    import pipeline.models
    import pipeline.safeload
    from pipeline.models.checkpoint import load_checkpoint

    assert pipeline.models.load_weights is pipeline.safeload.load_weights
    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UserError, match=f"cannot read checkpoint {bad}"):
        load_checkpoint(make_resnet_teacher(width=0.25), bad)
    with pytest.raises(UserError, match="teacher.weights file not found"):
        pipeline.safeload.load_weights(make_resnet_teacher(width=0.25), tmp_path / "none.pt", "teacher")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(UserError, match="holds a list, not a state_dict"):
        pipeline.safeload.load_weights(make_resnet_teacher(width=0.25), tmp_path / "list.pt", "teacher")


def test_torchvision_compatible_builtins():
    from pathlib import Path
    from types import SimpleNamespace

    from pipeline.errors import UserError
    from pipeline.models import build_model

    r50 = build_model(SimpleNamespace(builtin="resnet50", width=1.0), 5, 3, Path("."), "teacher")
    assert r50.fc.out_features == 5 and sum(p.numel() for p in r50.parameters()) > 23_000_000
    mb = build_model(SimpleNamespace(builtin="mobilenet_v2", width=0.5), 5, 3, Path("."), "student")
    full = build_model(SimpleNamespace(builtin="mobilenet_v2", width=1.0), 5, 3, Path("."), "student")
    assert sum(p.numel() for p in mb.parameters()) < sum(p.numel() for p in full.parameters())
    with pytest.raises(UserError, match=r"teacher.width = 0.5: resnet50 has one width"):
        build_model(SimpleNamespace(builtin="resnet50", width=0.5), 5, 3, Path("."), "teacher")
