"""Every TensorRT API our builder and TrtRuntime call exists in each TensorRT version we claim (10.x, 11.x).

Checked against NVIDIA's real Python bindings (tensorrt-cu12-bindings wheels, installed per version by
tools/install_trt_check.sh), imported against a stub C library compiled here, so no GPU or TensorRT
libraries are needed. The list of APIs is derived from our sources by an AST scan, not kept by hand.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import trt_api_helpers as h

# The versions we claim: JetPack 6.x (10.3), JetPack 7.2 (10.16), x86 GPUs (11.x).
CLAIMED = ("10.3.0", "10.16.1.11", "11.4.0.106")


@pytest.fixture(scope="module")
def surfaces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    found = h.installed_versions()
    missing = [v for v in CLAIMED if v not in found]
    if missing:
        pytest.skip(
            f"TensorRT bindings {missing} not installed under {h.bindings_root()} "
            "(run tools/install_trt_check.sh VENV, which `make` does)"
        )
    try:
        stub = h.build_stub(tmp_path_factory.mktemp("trtstub"))
    except (FileNotFoundError, OSError) as e:
        pytest.skip(f"cannot build the stub TensorRT library: {e}")
    direct, probed = h.scan()
    classes = sorted({c for c, _ in direct | probed} - {h.MODULE} | set(h.object_names().values()))
    return {v: h.introspect(found[v], stub, classes) for v in CLAIMED}


def test_scan_sees_the_calls_we_make() -> None:
    # Guards the scanner itself: if it stopped seeing these, every per-version check would pass vacuously.
    direct, probed = h.scan()
    for use in [
        ("IExecutionContext", "execute_async_v3"),
        ("IExecutionContext", "set_tensor_address"),
        ("IExecutionContext", "set_input_shape"),
        ("IBuilderConfig", "set_memory_pool_limit"),
        ("Builder", "build_serialized_network"),
        ("MemoryPoolType", "WORKSPACE"),
        ("Runtime", "DLA_core"),
        ("IBuilderConfig", "can_run_on_DLA"),
    ]:
        assert use in direct, use
    assert ("BuilderFlag", "FP16") in probed and ("BuilderFlag", "FP16") not in direct
    assert len(direct) > 40


def test_scan_flags_an_unguarded_removed_api(tmp_path: Path) -> None:
    src = tmp_path / "bad.py"
    src.write_text("def f(trt, config):\n    config.set_flag(trt.BuilderFlag.FP16)\n"
                   "    config.max_workspace_size = 1\n")
    direct, probed = h.scan([src])
    assert ("BuilderFlag", "FP16") in direct
    assert ("IBuilderConfig", "max_workspace_size") in direct
    assert not probed


@pytest.mark.parametrize("version", CLAIMED)
def test_every_direct_api_exists(surfaces: dict[str, dict], version: str) -> None:
    surface = surfaces[version]["surface"]
    assert surfaces[version]["version"] == version
    direct, _ = h.scan()
    missing = sorted((c, a) for c, a in direct if c not in surface or a not in surface[c])
    assert not missing, f"TensorRT {version} lacks {missing} (guard them with hasattr/_member or stop using them)"


@pytest.mark.parametrize("version", CLAIMED)
def test_declared_object_classes_exist(surfaces: dict[str, dict], version: str) -> None:
    module = set(surfaces[version]["surface"][h.MODULE])
    absent = sorted(set(h.object_names().values()) - module)
    assert not absent, f"TRT_OBJECT_NAMES maps to classes TensorRT {version} does not have: {absent}"


def test_probed_apis_exist_somewhere(surfaces: dict[str, dict]) -> None:
    # A probe for a name no claimed version has is dead code or a typo.
    _, probed = h.scan()
    for cls, attr in probed:
        assert any(attr in s["surface"].get(cls, []) for s in surfaces.values()), (cls, attr)


def test_removed_apis_really_differ_between_versions(surfaces: dict[str, dict]) -> None:
    # The facts our version gates rest on, read from the real bindings.
    s10, s11 = surfaces["10.3.0"]["surface"], surfaces["11.4.0.106"]["surface"]
    assert "FP16" in s10["BuilderFlag"] and "FP16" not in s11["BuilderFlag"]
    assert "INT8" in s10["BuilderFlag"] and "INT8" not in s11["BuilderFlag"]
    assert "EXPLICIT_BATCH" in s10["NetworkDefinitionCreationFlag"]
    assert "EXPLICIT_BATCH" not in s11["NetworkDefinitionCreationFlag"]
    for s in (s10, s11):
        assert "STRONGLY_TYPED" in s["NetworkDefinitionCreationFlag"]
        assert {"GPU_FALLBACK", "SPARSE_WEIGHTS"} <= set(s["BuilderFlag"])


def test_precision_plan_per_version(surfaces: dict[str, dict]) -> None:
    for version in ("10.3.0", "10.16.1.11"):
        plans = surfaces[version]["plans"]
        assert plans["fp16=False,dla=False"]["strongly_typed"] is True
        assert plans["fp16=False,dla=False"]["flags"] == []
        assert plans["fp16=False,dla=False"]["creation_flags"] != 0  # STRONGLY_TYPED bit set
        assert plans["fp16=True,dla=False"]["flags"] == ["FP16", "INT8"]
        assert plans["fp16=True,dla=False"]["creation_flags"] == 0  # weak typing, no EXPLICIT_BATCH in 10.x
        assert plans["fp16=False,dla=True"]["flags"] == ["FP16", "INT8"]
    plans = surfaces["11.4.0.106"]["plans"]
    for p in plans.values():
        assert p["strongly_typed"] is True and p["flags"] == [] and p["fp16_applied"] is False
    assert any("ONNX's own tensor types" in n for n in plans["fp16=True,dla=False"]["notes"])


@pytest.mark.parametrize("path", h.STANDALONE_SOURCES, ids=lambda p: p.name)
def test_portable_to_the_device(path: Path) -> None:
    # These files run on the device: Python 3.8 syntax, and only stdlib/numpy imported at top level
    # (pipeline imports only inside try/except ImportError).
    src = path.read_text()
    tree = ast.parse(src, feature_version=(3, 8))
    assert "from __future__ import annotations" in src
    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                assert m.split(".")[0] in allowed, f"{path.name}: top-level import {m}"
        if isinstance(node, ast.Try):
            for inner in node.body:
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("pipeline"):
                    assert any(
                        getattr(hd.type, "id", "") == "ImportError" for hd in node.handlers
                    ), f"{path.name}: pipeline import without an ImportError fallback"
