"""Targets are data: every shipped file validates, and mistakes are named."""

from __future__ import annotations

import pytest

from pipeline.errors import UserError
from pipeline.targets import available_targets, load_target

REQUIRED = {"cpu", "x86-gpu", "jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "jetson-xavier-nx", "arm64-cpu"}


def test_every_shipped_target_validates():
    names = set(available_targets())
    assert names >= REQUIRED
    for name in names:
        t = load_target(name)
        assert t.name == name


def test_jetson_alias_is_orin_nano():
    t = load_target("jetson")
    assert t.name == "jetson-orin-nano" and t.alias == "jetson"
    # the alias is what the user typed, not part of the target: dumps and cache keys stay the same
    assert t.model_dump() == load_target("jetson-orin-nano").model_dump() and "alias" not in t.model_dump()
    assert load_target("cpu").alias == "cpu"


def test_tensorrt_targets_use_symmetric_s8s8_with_float_bias():
    for name in available_targets():
        t = load_target(name)
        if t.runtime == "tensorrt":
            q = t.quantization
            assert (q.activation_type, q.weight_type) == ("int8", "int8")
            assert q.symmetric_activations and q.symmetric_weights and not q.quantize_bias


def _write(tmp_path, body: str):
    p = tmp_path / "t.yaml"
    p.write_text(body)
    return str(p)


def test_unknown_key_is_an_error(tmp_path):
    with pytest.raises(UserError, match="unknown key 'cores'"):
        load_target(_write(tmp_path, "name: t\nruntime: onnxruntime\narch: x86_64\ndevice_kind: cpu\ncores: 4\n"))


def test_tensorrt_target_rejects_asymmetric_uint8(tmp_path):
    body = (
        "name: t\nruntime: tensorrt\narch: x86_64\ndevice_kind: gpu\n"
        "tensorrt: {gpu: A, compute_capability: '8.6', tensorrt_version: '10.3'}\n"
        "quantization: {activation_type: uint8, weight_type: int8}\n"
    )
    with pytest.raises(UserError, match="symmetric S8S8"):
        load_target(_write(tmp_path, body))


def test_bad_profile_order(tmp_path):
    body = "name: t\nruntime: onnxruntime\narch: x86_64\ndevice_kind: cpu\nprofile: {min_batch: 4, opt_batch: 2}\n"
    with pytest.raises(UserError, match="min_batch <= opt_batch"):
        load_target(_write(tmp_path, body))
