"""The prune stage's cache key covers only the target facts its result depends on."""

from __future__ import annotations

from pipeline.config import PruneConfig
from pipeline.stages import STAGES
from pipeline.targets import load_target


def _facts(stage, target, **cfg):
    entry = next(e for e in STAGES if e.name == stage)
    return entry.target_facts(load_target(target), PruneConfig(**cfg))


def test_prune_key_covers_the_channel_multiple_only_when_rounding_comes_from_the_target():
    assert _facts("prune", "cpu") == _facts("prune", "jetson-orin-nano") == {"channel_multiple": 16}
    assert _facts("prune", "arm64-cpu") == {"channel_multiple": 8}
    assert _facts("prune", "arm64-cpu", round_to=4) == _facts("prune", "cpu", round_to=4) == {}


def test_prune_key_covers_sparse_tensor_cores_when_2_4_is_asked_for():
    assert _facts("prune", "jetson-orin-nano", sparsity="2:4") == {"channel_multiple": 16, "sparsity_2_4": True}
    assert _facts("prune", "x86-gpu", sparsity="2:4")["sparsity_2_4"] is True
    assert _facts("prune", "jetson-xavier-nx", sparsity="2:4")["sparsity_2_4"] is False


def test_stages_without_a_facts_function_add_nothing():
    assert _facts("distill", "cpu") is None
