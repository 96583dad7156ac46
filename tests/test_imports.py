"""Every module imports on a CPU-only install: TensorRT, pycuda and cuda-python are never needed to import."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pipeline


def test_every_module_imports_without_tensorrt_or_cuda():
    names = [m.name for m in pkgutil.walk_packages(pipeline.__path__, "pipeline.") if m.name != "pipeline.__main__"]
    assert "pipeline.runtimes.trt" in names and "pipeline.stages.quantize" in names
    # A fresh interpreter where importing tensorrt/pycuda/cuda fails, as on a CPU-only machine.
    code = (
        "import sys, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorrt', 'tensorrt_rtx', 'pycuda', 'cuda'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for n in {names!r}:\n"
        "    importlib.import_module(n)\n"
        "heavy = [m for m in ('tensorrt', 'pycuda') if m in sys.modules]\n"
        "print('OK', len(" + repr(names) + "), heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK") and r.stdout.strip().endswith("[]")


def test_cli_help_lists_subcommands():
    r = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    for cmd in ("run", "bench", "deploy", "targets"):
        assert cmd in r.stdout


def test_every_subpackage_ships_in_the_wheel():
    """pyproject lists packages by hand (targets/ is mapped in): a new subpackage must be listed too."""
    from pathlib import Path

    import tomllib

    root = Path(pipeline.__file__).parent
    found = {"pipeline." + ".".join(p.parent.relative_to(root).parts) if p.parent != root else "pipeline"
             for p in root.rglob("__init__.py")}
    listed = set(tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert found <= listed, f"add to pyproject [tool.setuptools] packages: {sorted(found - listed)}"
    assert "pipeline._targets" in listed
