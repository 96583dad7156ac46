"""The build stage and the backends' build decisions without a GPU, and the target files they read."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pipeline.backends import backend_for
from pipeline.build.recipe import build_options_for, tensorrt_recipe
from pipeline.errors import UserError
from pipeline.stages import build as stage
from pipeline.targets import available_targets, load_target

REPO = Path(__file__).resolve().parents[2]

TRT_TARGETS = ["x86-gpu", "jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "jetson-xavier-nx"]


def _onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 16, 16])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, 16, 16])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g", [x], [y]))
    onnx.save(model, str(path))
    return path


def test_all_issue_targets_exist_and_validate() -> None:
    names = set(available_targets())
    assert set(TRT_TARGETS + ["cpu", "arm64-cpu"]) <= names
    for n in TRT_TARGETS:
        t = load_target(n)
        assert t.runtime == "tensorrt" and t.quantization.activation_type == "int8"
        assert t.quantization.quantize_bias is False and t.quantization.symmetric_activations
    assert load_target("jetson").name == "jetson-orin-nano"
    nano, xavier = load_target("jetson-orin-nano").tensorrt, load_target("jetson-xavier-nx").tensorrt
    assert nano.dla_cores == 0 and nano.sparsity_2_4 and nano.compute_capability == "8.7"
    assert xavier.dla_cores == 2 and not xavier.sparsity_2_4
    assert load_target("x86-gpu").tensorrt.tensorrt_version.startswith("11.")
    arm = load_target("arm64-cpu")
    assert arm.arch == "aarch64" and arm.quantization.activation_type == "int8"


@pytest.mark.parametrize("edit, message", [
    ("sparsity_2_4: false", None),  # sanity: the base file is valid
    ("sparsity_2_4: true", "2:4 sparse"),
    ("use_dla: true", "use_dla is true but this GPU has dla_cores = 0"),
    ("jetpack: \"6.0\"", "JetPack 6.0 ships TensorRT 8.6"),
])
def test_target_validators(tmp_path: Path, edit: str, message: str | None) -> None:
    src = REPO / "targets" / "jetson-xavier-nx.yaml"
    text = src.read_text()
    key = edit.split(":")[0]
    lines = [(("  " + edit) if ln.strip().startswith(key + ":") else ln) for ln in text.splitlines()]
    if key == "use_dla":  # put the DLA request on a DLA-less GPU
        lines = [ln.replace("dla_cores: 2", "dla_cores: 0") for ln in lines]
    p = tmp_path / "t.yaml"
    p.write_text("\n".join(lines) + "\n")
    if message is None:
        load_target(str(p))
    else:
        with pytest.raises(UserError, match=message):
            load_target(str(p))


def test_dla_needs_a_static_batch(tmp_path: Path) -> None:
    src = REPO / "targets" / "jetson-orin-nx.yaml"
    p = tmp_path / "t.yaml"
    p.write_text(src.read_text().replace("max_batch: 1", "max_batch: 8"))
    with pytest.raises(UserError, match="DLA runs static shapes"):
        load_target(str(p))


def test_onnxruntime_target_is_a_pass_through(tmp_path: Path) -> None:
    target = load_target("arm64-cpu")
    r = backend_for(target).build(tmp_path / "absent.onnx", target, tmp_path)
    assert r.status == "skipped" and "onnxruntime" in r.reason and r.engine is None and r.trtexec is None


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_target_without_tensorrt_is_skipped_with_commands(tmp_path: Path) -> None:
    import json

    from pipeline.stages.base import Artifact, StageInputs

    onnx_path = _onnx(tmp_path / "model_int8.onnx")
    inputs = StageInputs({"quantize": Artifact({"model": onnx_path}, "model")}, None, load_target("jetson-orin-nx"),
                         None, tmp_path, tmp_path, print)
    work = tmp_path / "build"
    art = stage.run(inputs, None, work)
    assert art.status == "skipped"
    assert art.metrics.reason and "TensorRT is not installed" in art.metrics.reason
    metrics = art.metrics.to_dict()
    assert list(metrics) == ["device_build_command", "trtexec", "reason"]  # the keys stage.json always had
    argv = metrics["trtexec"]
    assert "--useDLACore=0" in argv and "--maxShapes=input:1x1x16x16" in argv and "--fp16" in argv
    assert "--timingCacheFile=timing.cache" in argv  # relative: it runs in the bundle on the device
    cmd = metrics["device_build_command"]
    assert cmd[:2] == ["python3", "trt_builder.py"] and "--dla-core" in cmd and "--gpu-fallback" in cmd
    assert art.path == work / "build_report.json"
    assert json.loads(art.path.read_text())["trtexec"] == argv  # JSON-able, what the manifest records
    # the same commands, under the same file names, as the bundle's recipe (one place makes both)
    recipe = tensorrt_recipe(load_target("jetson-orin-nx"), {"name": "input", "shape": [1, 1, 16, 16]},
                             explicit_int8=False)  # this ONNX has no Q/DQ nodes
    assert argv == recipe.trtexec_argv and cmd == recipe.device_command
    assert "--saveEngine=model_int8.engine" in argv and cmd[cmd.index("--report") + 1] == "build_report.json"


def test_missing_onnx_is_a_user_error(tmp_path: Path) -> None:
    target = load_target("x86-gpu")
    with pytest.raises(UserError, match="ONNX not found"):
        backend_for(target).build(tmp_path / "nope.onnx", target, tmp_path)


def test_build_options_follow_the_target(tmp_path: Path) -> None:
    o = build_options_for(load_target("jetson-orin-nx"), tmp_path)
    assert (o.dla_core, o.gpu_fallback, o.max_batch, o.workspace_mib) == (0, True, 1, 2048)
    assert o.timing_cache == str(tmp_path / "timing.cache")
    o = build_options_for(load_target("x86-gpu"), tmp_path)
    assert o.dla_core is None and o.fp16 is False and (o.min_batch, o.opt_batch, o.max_batch) == (1, 8, 64)
    with pytest.raises(UserError, match="only TensorRT targets build engines"):
        build_options_for(load_target("cpu"))


def test_recipe_static_batch_and_host_options(tmp_path: Path) -> None:
    target = load_target("x86-gpu")
    r = tensorrt_recipe(target, {"name": "x", "shape": [4, 3, 8, 8], "dynamic_batch": False})
    assert (r.options.min_batch, r.options.opt_batch, r.options.max_batch) == (4, 4, 4)
    assert "--minShapes=x:4x3x8x8" in r.trtexec_argv and r.profile_shapes() == {
        "x": {"min": [4, 3, 8, 8], "opt": [4, 3, 8, 8], "max": [4, 3, 8, 8]}}
    assert r.options.timing_cache == "timing.cache" and r.host_options(tmp_path).timing_cache == str(
        tmp_path / "timing.cache")
    assert (r.engine, r.report) == ("model_int8.engine", "build_report.json")
