"""Helpers for the TensorRT API checks: find NVIDIA's real bindings, import them against a stub C
library in a subprocess, and scan our sources for every TensorRT attribute they use.

Bindings live in <venv>/trt-bindings/<version>/tensorrt_bindings (tools/install_trt_check.sh puts them
there; EDGEPIPE_TRT_BINDINGS overrides the folder). Each version is imported in its own subprocess
because two `tensorrt.so` builds cannot share one interpreter.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STUB_SOURCE = Path(__file__).with_name("stub_nvinfer.c")
# The files whose TensorRT calls must exist in every version we claim (builder, its plan, TrtRuntime).
SCANNED_SOURCES = [REPO / "pipeline" / "build" / "trt_builder.py", REPO / "pipeline" / "build" / "trt_plan.py",
                   REPO / "pipeline" / "runtimes" / "trt.py"]
# Every file a deploy bundle ships to run on the device without edgepipe (bundle name in the comment).
STANDALONE_SOURCES = SCANNED_SOURCES + [
    REPO / "pipeline" / "runtimes" / "ort.py",  # ort_runtime.py (trt.py ships as trt_runtime.py)
    REPO / "pipeline" / "device_facts.py",
    REPO / "pipeline" / "deploy" / "device" / "device_runner.py",
]
PROBE_FUNCTIONS = {"hasattr", "getattr", "_member"}
MODULE = "<module>"


def bindings_root() -> Path:
    return Path(os.environ.get("EDGEPIPE_TRT_BINDINGS", Path(sys.prefix) / "trt-bindings"))


def installed_versions() -> dict[str, Path]:
    """Version -> folder holding `tensorrt_bindings`, for each installed bindings wheel."""
    root = bindings_root()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "tensorrt_bindings" / "__init__.py").is_file()}


def build_stub(tmp: Path) -> Path:
    """Compile the stub once per major version soname (libnvinfer.so.10, .so.11, ...) into `tmp`."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise FileNotFoundError("no C compiler (gcc/cc) to build the TensorRT stub library")
    for major in ("8", "9", "10", "11", "12"):
        for lib in ("nvinfer", "nvonnxparser", "nvinfer_plugin"):
            out = tmp / f"lib{lib}.so.{major}"
            subprocess.run(
                [gcc, "-shared", "-fPIC", "-o", str(out), f"-Wl,-soname,lib{lib}.so.{major}", str(STUB_SOURCE)],
                check=True, capture_output=True, text=True,
            )
    return tmp


_INTROSPECT = r"""
import json, sys
import tensorrt_bindings as trt
sys.modules["tensorrt"] = trt  # our code says `import tensorrt`
from pipeline.build import trt_builder as tb
wanted = json.loads(sys.argv[1])
surface = {"<module>": sorted(dir(trt))}
for name in wanted:
    obj = getattr(trt, name, None)
    if obj is not None:
        surface[name] = sorted(dir(obj))
plans = {}
for fp16 in (False, True):
    for dla in (False, True):
        p = tb.plan_precision(trt, has_qdq=True, fp16=fp16, use_dla=dla)
        p["creation_flags"] = tb.network_creation_flags(trt, p["strongly_typed"])
        plans["fp16=%s,dla=%s" % (fp16, dla)] = p
print(json.dumps({"version": trt.__version__, "surface": surface, "plans": plans}))
"""


def introspect(folder: Path, stub_dir: Path, classes: list[str]) -> dict:
    """Import the bindings in `folder` against the stub and return their API surface and our plans."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(stub_dir), env.get("LD_LIBRARY_PATH")]))
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(REPO)])
    proc = subprocess.run(
        [sys.executable, "-c", _INTROSPECT, json.dumps(classes)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"importing bindings from {folder} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def object_names() -> dict[str, str]:
    """The builder's declared variable-name -> TensorRT class map (read from the source, not imported)."""
    tree = ast.parse(SCANNED_SOURCES[0].read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "TRT_OBJECT_NAMES":
            return ast.literal_eval(node.value)
    raise LookupError("TRT_OBJECT_NAMES not found in trt_builder.py")


def _owner(node: ast.AST, names: dict[str, str]) -> str | None:
    """The TensorRT class an expression denotes: `trt.X` -> X, `trt` -> module, a known variable -> its class."""
    if isinstance(node, ast.Name):
        if node.id == "trt":
            return MODULE
        return names.get(node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "trt":
        return node.attr
    return None


def scan(paths: list[Path] | None = None) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """Every (class, attribute) our TensorRT code touches, split into direct uses and hasattr-style probes.

    Direct: `trt.X`, `trt.X.Y`, `builder.create_network` (variables named per TRT_OBJECT_NAMES).
    Probed: `hasattr(obj, "NAME")`, `getattr(obj, "NAME", ...)`, `_member(obj, "NAME")`.
    """
    names = object_names()
    direct: set[tuple[str, str]] = set()
    probed: set[tuple[str, str]] = set()
    for path in paths or SCANNED_SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                owner = _owner(node.value, names)
                if owner is not None:
                    direct.add((owner, node.attr))
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in PROBE_FUNCTIONS
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                owner = _owner(node.args[0], names)
                if owner is not None:
                    probed.add((owner, node.args[1].value))
    return direct - probed, probed
