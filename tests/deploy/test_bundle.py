"""The deploy bundle: contents, hashes, TensorRT recipes per target, refusals, atomic replacement."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.build import recipe
from pipeline.deploy.bundle import make_bundle
from pipeline.errors import UserError
from pipeline.fileio import sha256_file
from pipeline.targets import load_target

REPO = Path(__file__).resolve().parents[2]


def _script_commands(script: str) -> dict[str, list[str]]:
    """The trtexec argv of the GPU line and (if present) the DLA line of build_trtexec.sh."""
    out = {}
    for line in script.splitlines():
        line = line.strip()
        if line.startswith('exec "$TRTEXEC"'):
            out["dla" if "DLA_CORE" in line else "gpu"] = shlex.split(line)[2:]
    return out


def test_cpu_bundle_has_model_runner_manifest_report_and_correct_hashes(make_run, tmp_path):
    run = make_run("arm64-cpu", accuracy=0.875)
    dist = tmp_path / "dist" / "arm64-cpu"
    manifest = make_bundle(run, load_target("arm64-cpu"), dist)
    names = {p.relative_to(dist).as_posix() for p in dist.rglob("*") if p.is_file()}
    assert names == {"model_int8.onnx", "device_runner.py", "device_checks.py", "device_facts.py", "ort_runtime.py",
                     "preprocess.py", "eval.npz", "report.md", "README.md", "manifest.json"}
    assert manifest["preprocessing"]["module"] == "preprocess.py"
    assert set(manifest["files"]) == names - {"manifest.json"}
    for rel, info in manifest["files"].items():
        assert sha256_file(dist / rel) == info["sha256"], rel
    assert json.loads((dist / "manifest.json").read_text()) == manifest
    assert (dist / "model_int8.onnx").read_bytes() == (run / "quantize" / "model_int8.onnx").read_bytes()
    assert manifest["runtime"] == "onnxruntime" and "build" not in manifest
    assert manifest["input"]["name"] == "input" and manifest["preprocessing"]["mean"] == [0.5]
    assert manifest["expected"]["accuracy"] == 0.875
    assert manifest["latency_budget"] == {"ms": 20.0, "percentile": "p99", "batch": 1}
    assert manifest["benchmark"]["batches"] == [1, 8]
    assert manifest["target"]["name"] == "arm64-cpu" and manifest["target"]["arch"] == "aarch64"
    assert manifest["target_alias"] == "arm64-cpu"
    assert (dist / "ort_runtime.py").read_bytes() == (REPO / "pipeline/runtimes/ort.py").read_bytes()
    assert (dist / "device_facts.py").read_bytes() == (REPO / "pipeline/device_facts.py").read_bytes()
    readme = (dist / "README.md").read_text()
    assert "python3 device_runner.py" in readme and "$" not in readme.replace("$ ", "")
    assert not list(dist.parent.glob(".arm64-cpu.*")), "temporary folders left next to DIST"
    assert dist.stat().st_mode & 0o777 == 0o755 and (dist / "manifest.json").stat().st_mode & 0o777 == 0o644


def test_orin_nano_bundle_builds_on_gpu_only(make_run, tmp_path):
    dist = tmp_path / "dist" / "jetson"
    # `jetson` is the Orin Nano alias
    manifest = make_bundle(make_run("jetson-orin-nano"), load_target("jetson"), dist)
    b = manifest["build"]
    target = load_target("jetson-orin-nano")
    # the builder and runner are copied byte for byte from the package
    assert (dist / "trt_builder.py").read_bytes() == (REPO / "pipeline/build/trt_builder.py").read_bytes()
    assert (dist / "trt_plan.py").read_bytes() == (REPO / "pipeline/build/trt_plan.py").read_bytes()
    assert (dist / "trt_runtime.py").read_bytes() == (REPO / "pipeline/runtimes/trt.py").read_bytes()
    assert manifest["target"]["name"] == "jetson-orin-nano" and manifest["target_alias"] == "jetson"
    assert {"trt_runtime.py", "ort_runtime.py", "trt_builder.py", "trt_plan.py", "build_trtexec.sh"} <= set(
        manifest["files"]) and "device_sessions.py" not in manifest["files"]
    script = (dist / "build_trtexec.sh").read_text()
    cmds = _script_commands(script)
    assert set(cmds) == {"gpu"}, "the Orin Nano has no DLA: no DLA variant may be offered"
    gpu = cmds["gpu"]
    assert ["trtexec", *gpu] == b["trtexec_argv"]
    assert "DLA" not in script.replace("no DLA", "") and not any("DLA" in a for a in gpu + b["python_args"])
    assert f"--memPoolSize=workspace:{target.tensorrt.workspace_mib}M" in gpu
    assert "--minShapes=input:1x1x8x8" in gpu and "--maxShapes=input:8x1x8x8" in gpu
    assert "--onnx=model_int8.onnx" in gpu and "--saveEngine=model_int8.engine" in gpu
    assert b["python_args_dla"] is None and b["trtexec_argv_dla"] is None and b["dla_core"] == -1
    assert b["python_args"][b["python_args"].index("--max-batch") + 1] == "8"
    assert "--dla-core" not in b["python_args"]
    assert manifest["latency_budget"]["ms"] == target.latency_budget_ms
    # the shipped ONNX is S8S8 symmetric QDQ with float biases
    counts = recipe.check_qdq_for_tensorrt(dist / "model_int8.onnx")
    assert counts["quantize"] > 0 and counts["dequantize"] > 0
    r = subprocess.run(["sh", "-n", str(dist / "build_trtexec.sh")], capture_output=True)
    assert r.returncode == 0, r.stderr


def test_agx_orin_bundle_offers_dla_with_gpu_fallback(make_run, tmp_path):
    dist = tmp_path / "agx"
    manifest = make_bundle(make_run("jetson-agx-orin"), load_target("jetson-agx-orin"), dist)
    b = manifest["build"]
    cmds = _script_commands((dist / "build_trtexec.sh").read_text())
    assert set(cmds) == {"gpu", "dla"}
    assert not any(a.startswith("--useDLACore") for a in cmds["gpu"]), "default build is the GPU (use_dla: false)"
    assert "--useDLACore=$DLA_CORE" in cmds["dla"] and "--allowGPUFallback" in cmds["dla"]
    # DLA wants static shapes: min = opt = max = the profile's opt batch (8)
    assert {a for a in cmds["dla"] if "Shapes=" in a} == {f"--{k}Shapes=input:8x1x8x8" for k in ("min", "opt", "max")}
    assert "--maxShapes=input:32x1x8x8" in cmds["gpu"]
    assert "--gpu-fallback" in b["python_args_dla"] and "--gpu-fallback" not in b["python_args"]
    assert b["dla_cores"] == 2 and b["dla_core"] == -1
    assert "--memPoolSize=workspace:4096M" in cmds["gpu"]


def test_bundled_tensorrt_modules_import_without_edgepipe(make_run, tmp_path):
    dist = tmp_path / "nano"
    make_bundle(make_run("jetson-orin-nano"), load_target("jetson-orin-nano"), dist)
    code = ("import sys; sys.modules['pipeline'] = None; "
            "import trt_runtime, ort_runtime, trt_builder, trt_plan, device_facts; print('ok')")
    r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, '.'); {code}"],
                       cwd=dist, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_tensorrt_bundle_refuses_asymmetric_uint8_qdq(make_run, tmp_path):
    import onnx
    from onnx import numpy_helper

    run = make_run("jetson-orin-nano")
    path = run / "quantize" / "model_int8.onnx"
    model = onnx.load(str(path))
    for init in model.graph.initializer:  # turn the activations' zero points into uint8 128 (U8 asymmetric)
        if init.name.endswith("_zero_point") and init.data_type == onnx.TensorProto.INT8 and not init.dims:
            init.CopyFrom(numpy_helper.from_array(__import__("numpy").array(128, dtype="uint8"), init.name))
    onnx.save(model, str(path))
    m = json.loads((run / "manifest.json").read_text())
    m["final"]["sha256"] = sha256_file(path)
    (run / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="TensorRT needs S8S8"):
        make_bundle(run, load_target("jetson-orin-nano"), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_refusals(make_run, tmp_path):
    run = make_run("arm64-cpu")
    with pytest.raises(UserError, match="made for target 'arm64-cpu', not 'jetson-orin-nano'"):
        make_bundle(run, load_target("jetson"), tmp_path / "d1")
    home = tmp_path / "home"
    home.mkdir()
    (home / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="is not an edgepipe bundle"):
        make_bundle(run, load_target("arm64-cpu"), home)
    assert (home / "precious.txt").read_text() == "keep me"
    (run / "quantize" / "model_int8.onnx").write_bytes(b"not the model")
    with pytest.raises(UserError, match="changed since the pipeline wrote it"):
        make_bundle(run, load_target("arm64-cpu"), tmp_path / "d2")


def test_rebundle_replaces_the_old_bundle_atomically(make_run, tmp_path):
    dist = tmp_path / "dist"
    make_bundle(make_run("arm64-cpu", accuracy=0.5, name="a"), load_target("arm64-cpu"), dist)
    (dist / "stale.txt").write_text("from the old bundle")
    m = make_bundle(make_run("arm64-cpu", accuracy=0.75, name="b"), load_target("arm64-cpu"), dist)
    assert m["expected"]["accuracy"] == 0.75 and not (dist / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "dist"]


def test_device_side_files_are_python38_syntax(make_run, tmp_path):
    import ast

    dist = tmp_path / "nano"
    make_bundle(make_run("jetson-orin-nano"), load_target("jetson-orin-nano"), dist)
    for name in ("device_runner.py", "device_checks.py", "device_facts.py", "ort_runtime.py", "trt_runtime.py",
                 "trt_builder.py", "trt_plan.py"):
        ast.parse((dist / name).read_text(), filename=name, feature_version=(3, 8))


def test_an_unfinished_run_is_not_bundled(make_run, tmp_path):
    run = make_run("arm64-cpu")
    m = json.loads((run / "manifest.json").read_text())
    m.update(complete=False, failed_stage="quantize")
    (run / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="did not finish.*quantize"):
        make_bundle(run, load_target("arm64-cpu"), tmp_path / "d")


def test_recipe_python_args_are_what_the_build_stage_records(make_run, tmp_path):
    """The bundle's builder arguments and trtexec line come from the same recipe as the build stage's."""
    manifest = make_bundle(make_run("jetson-orin-nx"), load_target("jetson-orin-nx"), tmp_path / "nx")
    b = manifest["build"]
    r = recipe.tensorrt_recipe(load_target("jetson-orin-nx"), manifest["input"])
    assert b["python_args"] == r.python_args and b["trtexec_argv"] == r.trtexec_argv
    assert b["python_args"][-2:] == ["--dla-core", "0"] and b["dla_core"] == 0  # use_dla: the default build
    assert (b["engine"], b["report"]) == ("model_int8.engine", "build_report.json")


def test_dist_that_is_a_file_is_refused(make_run, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match="is a file"):
        make_bundle(make_run("arm64-cpu"), load_target("arm64-cpu"), tmp_path / "file")
    with pytest.raises(UserError, match="a part of this path is a file"):
        make_bundle(make_run("arm64-cpu", name="r2"), load_target("arm64-cpu"), tmp_path / "file" / "d")
