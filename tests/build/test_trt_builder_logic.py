"""The builder's pure logic: trtexec command per TensorRT version, engine cache key, CLI validation."""

from __future__ import annotations

import pytest

from pipeline.build.trt_builder import BuildOptions, cache_key, main, onnx_has_qdq, summarize_layers
from pipeline.build.trtexec import trtexec_build_argv

SHAPES = {"input": [1, 16, 16]}


def test_trtexec_10x_dla_sparse_fp16() -> None:
    opts = BuildOptions(min_batch=1, opt_batch=1, max_batch=1, workspace_mib=2048, dla_core=0,
                        gpu_fallback=True, sparse=True, opt_level=4, timing_cache="timing.cache", fp16=True)
    argv = trtexec_build_argv("m.onnx", "m.engine", opts, "10.3", SHAPES)
    assert argv[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine"]
    for flag in ["--minShapes=input:1x1x16x16", "--maxShapes=input:1x1x16x16", "--memPoolSize=workspace:2048M",
                 "--builderOptimizationLevel=4", "--timingCacheFile=timing.cache", "--useDLACore=0",
                 "--allowGPUFallback", "--sparsity=enable", "--fp16", "--int8"]:
        assert flag in argv, flag
    assert "--stronglyTyped" not in argv


def test_trtexec_10x_strongly_typed_without_fp16() -> None:
    argv = trtexec_build_argv("m.onnx", "m.engine", BuildOptions(max_batch=8), "10.16", SHAPES)
    assert "--stronglyTyped" in argv and "--fp16" not in argv and "--int8" not in argv
    assert "--optShapes=input:1x1x16x16" in argv and "--maxShapes=input:8x1x16x16" in argv


def test_trtexec_11x_has_no_precision_flags() -> None:
    opts = BuildOptions(fp16=True, sparse=True, dla_core=None)
    argv = trtexec_build_argv("m.onnx", "m.engine", opts, "11.4", SHAPES)
    assert not {"--fp16", "--int8", "--best", "--stronglyTyped"} & set(argv)
    assert "--sparsity=enable" in argv and "--useDLACore=0" not in argv


def test_trtexec_fp32_graph_gets_no_int8() -> None:
    argv = trtexec_build_argv("m.onnx", "m.engine", BuildOptions(fp16=True), "10.3", SHAPES, explicit_int8=False)
    assert "--fp16" in argv and "--int8" not in argv


def test_cache_key_changes_with_every_component() -> None:
    dev = {"name": "Orin", "compute_capability": "8.7"}
    shapes = {"input": {"min": [1, 1, 16, 16], "opt": [1, 1, 16, 16], "max": [8, 1, 16, 16]}}
    base = cache_key("a" * 64, "10.3.0", dev, BuildOptions(), shapes)
    assert base == cache_key("a" * 64, "10.3.0", dict(dev), BuildOptions(timing_cache="elsewhere"), shapes)
    variants = [
        cache_key("b" * 64, "10.3.0", dev, BuildOptions(), shapes),
        cache_key("a" * 64, "10.3.1", dev, BuildOptions(), shapes),
        cache_key("a" * 64, "10.3.0", {"name": "Orin", "compute_capability": "8.6"}, BuildOptions(), shapes),
        cache_key("a" * 64, "10.3.0", dev, BuildOptions(fp16=True), shapes),
        cache_key("a" * 64, "10.3.0", dev, BuildOptions(), {"input": dict(shapes["input"], max=[4, 1, 16, 16])}),
    ]
    assert len({base, *variants}) == 6


def test_onnx_has_qdq() -> None:
    assert onnx_has_qdq(b"\x08\x01...DequantizeLinear...") and not onnx_has_qdq(b"Conv Relu Gemm")


@pytest.mark.parametrize("argv", [
    ["--min-batch", "4", "--opt-batch", "2", "--max-batch", "8"],
    ["--opt-level", "7"],
])
def test_cli_rejects_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--onnx", "m.onnx", "--engine", "m.engine", *argv])
    assert e.value.code == 2


def test_cli_without_tensorrt_exits_3(monkeypatch, capsys) -> None:
    import pipeline.build.trt_builder as tb

    def no_trt():
        raise ImportError("No module named 'tensorrt'")

    monkeypatch.setattr(tb, "import_tensorrt", no_trt)
    assert main(["--onnx", "m.onnx", "--engine", "m.engine"]) == 3
    assert "TensorRT is not importable" in capsys.readouterr().err


def test_summarize_layers_finds_dla_subgraphs() -> None:
    info = {"Layers": [{"Name": "{ForeignNode[/stem/Conv.../pw/Conv]}", "LayerType": "DLA"},
                       {"Name": "/head/Gemm", "LayerType": "CaskGemmConvolution"}]}
    s = summarize_layers(info)
    assert s["count"] == 2 and s["dla_subgraphs"] == ["{ForeignNode[/stem/Conv.../pw/Conv]}"]
    assert summarize_layers({"Layers": ["a", "b"]})["dla_subgraphs"] == [] and summarize_layers(None) is None


class _Input:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class _Network:
    def __init__(self, *inputs):
        self._inputs = inputs
        self.num_inputs = len(inputs)

    def get_input(self, i):
        return self._inputs[i]


def test_builder_profile_covers_a_dynamic_height_and_width() -> None:
    from pipeline.build import trt_builder

    args = trt_builder._parse_args(["--onnx", "m.onnx", "--engine", "m.engine", "--max-batch", "4",
                                    "--min-hw", "96x128", "--opt-hw", "224x224", "--max-hw", "320x448"])
    opts = trt_builder.BuildOptions(min_batch=1, opt_batch=1, max_batch=4, min_hw=args.min_hw, opt_hw=args.opt_hw,
                                    max_hw=args.max_hw)
    shapes = trt_builder._profile_shapes(_Network(_Input("input", [-1, 3, -1, -1])), opts)
    assert shapes == {"input": {"min": [1, 3, 96, 128], "opt": [1, 3, 224, 224], "max": [4, 3, 320, 448]}}
    fixed = trt_builder._profile_shapes(_Network(_Input("input", [-1, 3, 224, 224])), opts)
    assert fixed["input"]["max"] == [4, 3, 224, 224]


@pytest.mark.parametrize("argv", [["--min-hw", "96x96"], ["--min-hw", "300x300", "--opt-hw", "224x224",
                                                                      "--max-hw", "320x320"], ["--min-hw", "ax1"]])
def test_builder_rejects_partial_or_unordered_hw(argv) -> None:
    from pipeline.build import trt_builder

    with pytest.raises(SystemExit):
        trt_builder._parse_args(["--onnx", "m.onnx", "--engine", "m.engine", *argv])


def test_builder_dynamic_hw_without_a_range_is_a_build_error() -> None:
    from pipeline.build import trt_builder

    with pytest.raises(trt_builder.BuildError, match="axis 2 is dynamic"):
        trt_builder._profile_shapes(_Network(_Input("input", [-1, 3, -1, -1])), trt_builder.BuildOptions())
