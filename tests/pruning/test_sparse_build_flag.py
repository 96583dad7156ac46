"""TensorRT's sparse-weights flag: on only for a 2:4 model on a GPU with sparse tensor cores."""

from __future__ import annotations

import pytest
import torch.nn as nn

from pipeline.build.recipe import tensorrt_recipe
from pipeline.pruning import sparsity
from pipeline.pruning.latency import export_bytes
from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.build import model_is_2_4
from pipeline.stages.metrics import PruneMetrics
from pipeline.targets import load_target

SPEC = {"name": "input", "shape": [1, 3, 16, 16]}


@pytest.mark.parametrize("target, sparse_2_4, expected", [
    ("jetson-orin-nano", True, True), ("jetson-orin-nx", True, True), ("jetson-agx-orin", True, True),
    ("x86-gpu", True, True), ("jetson-orin-nano", False, False), ("jetson-xavier-nx", True, False),
])
def test_recipe_sets_the_flag_for_2_4_models_on_sparse_gpus(target, sparse_2_4, expected):
    r = tensorrt_recipe(load_target(target), SPEC, sparse_2_4=sparse_2_4)
    assert r.options.sparse is expected
    assert ("--sparsity=enable" in r.trtexec_argv) is expected
    assert ("--sparse" in r.device_command) is expected


def test_one_sparsity_field_per_target():
    from pipeline.targets import TensorRTSpec

    assert "sparsity_2_4" in TensorRTSpec.model_fields and "sparse_weights" not in TensorRTSpec.model_fields
    assert load_target("cpu").tensorrt is None and load_target("cpu").channel_multiple >= 1


def test_the_trt_flag_name_exists_in_the_bindings():
    trt = pytest.importorskip("tensorrt_rtx")
    assert hasattr(trt.BuilderFlag, "SPARSE_WEIGHTS")  # what trt_builder.py appends for options.sparse


def _inputs(artifacts):
    return StageInputs(artifacts, None, load_target("jetson-orin-nano"), None, ".", ".", lambda *a: None)


def _metrics(**extra):
    return PruneMetrics(ratio=0.0, params_before=1, macs_before=1, accuracy_before=1.0, params=1, macs=1,
                        accuracy=1.0, pruned=True, **extra)


def test_build_stage_learns_2_4_from_the_prune_metrics_or_the_onnx(tmp_path):
    onnx = tmp_path / "m.onnx"
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)).eval()
    onnx.write_bytes(export_bytes(net, (3, 16, 16)))
    assert not model_is_2_4(_inputs({}), onnx)
    sparsity.apply_2_4(net)
    sparsity.squash(net)
    onnx.write_bytes(export_bytes(net, (3, 16, 16)))
    assert model_is_2_4(_inputs({}), onnx)
    prune = Artifact({"model": tmp_path / "p.pt"}, "model", _metrics(sparsity="2:4"))
    assert model_is_2_4(_inputs({"prune": prune}), tmp_path / "absent.onnx")
    dense = Artifact({"model": tmp_path / "p.pt"}, "model", _metrics())
    assert not model_is_2_4(_inputs({"prune": dense}), onnx)  # the prune record wins when present


@pytest.mark.parametrize("target, expected", [("jetson-orin-nano", True), ("jetson-xavier-nx", False)])
def test_build_stage_passes_the_flag_to_the_recipe_and_records_it(tmp_path, target, expected):
    from pipeline.stages import build

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)).eval()
    sparsity.apply_2_4(net)
    sparsity.squash(net)
    onnx = tmp_path / "model_int8.onnx"
    onnx.write_bytes(export_bytes(net, (3, 16, 16)))
    quant = Artifact({"model": onnx}, "model", None)
    inputs = StageInputs({"quantize": quant, "export": quant}, None, load_target(target), None, ".", tmp_path,
                         lambda *a: None)
    work = tmp_path / "build"
    work.mkdir()
    art = build.run(inputs, None, work)  # no TensorRT here: skipped, with the device's build commands
    assert bool(art.metrics.sparse_2_4) is expected
    assert ("--sparsity=enable" in art.metrics.trtexec) is expected
    assert ("--sparse" in art.metrics.device_build_command) is expected
