"""Checks the device runner makes before it builds or measures anything (standalone, Python >= 3.8).

Shipped in every deploy bundle beside `device_runner.py`: the bundle's integrity (every file's sha256 against
manifest.json, paths inside the bundle only), the Python modules the bundle needs (one line saying what to
install when one is missing), and whether this CPU can run the model's INT8 scheme exactly (a full-range U8S8
model on x86 without VNNI is refused).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any, List, Sequence

# What a bundle needs on the device: key -> (name, how to install it ({py}: this Python), modules tried in order)
REQUIREMENTS = {
    "numpy": ("numpy", "`{py} -m pip install numpy`", ("numpy",)),
    "onnxruntime": ("onnxruntime", "`{py} -m pip install onnxruntime`", ("onnxruntime",)),
    "tensorrt": ("TensorRT", "JetPack's TensorRT (`sudo apt install python3-libnvinfer`)", ("tensorrt",)),
    "cuda": ("cuda-python or pycuda", "`{py} -m pip install cuda-python`",
             ("cuda.bindings.runtime", "cuda.cudart", "pycuda.driver")),
}


class IntegrityError(Exception):
    """The bundle on the device is not the bundle that was made: refuse to run it."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(str(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_and_verify(bundle: Path, expect_manifest_sha256: str = "") -> dict:
    """Check manifest.json (against the host's hash when given) and every file it lists.

    Args:
        bundle: the bundle folder on this device.
        expect_manifest_sha256: sha256 of manifest.json as the host made it ("" to skip that check).
    Returns:
        The manifest dict.
    Raises:
        IntegrityError: naming the file, the expected and the actual hash.
    """
    mpath = bundle / "manifest.json"
    if not mpath.is_file():
        raise IntegrityError(f"manifest.json is missing from the bundle at {bundle} on the device")
    got = sha256_file(mpath)
    if expect_manifest_sha256 and got != expect_manifest_sha256:
        raise IntegrityError(
            f"sha256 mismatch for manifest.json on the device: expected {expect_manifest_sha256} got {got}"
        )
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    for rel, info in sorted(manifest.get("files", {}).items()):
        # The manifest names files inside the bundle only: refuse paths that climb out of it.
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise IntegrityError(f"manifest.json lists a path outside the bundle: {rel!r}")
        p = bundle / rel
        if not p.is_file():
            raise IntegrityError(f"{rel} is missing from the bundle on the device ({p})")
        actual = sha256_file(p)
        if actual != info["sha256"]:
            raise IntegrityError(
                "sha256 mismatch for {} on the device: expected {} got {}".format(rel, info["sha256"], actual)
            )
    return manifest


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


_VNNI_FLAGS = ("avx512_vnni", "avx512vnni", "avx_vnni", "avxvnni", "amx_int8", "amxint8")


def full_range_refusal(manifest: dict, cpuinfo: str, machine: str) -> Any:
    """Why this x86 CPU must not run the bundle's model, or None.

    A U8S8 model quantized with full-range (8-bit) weights, i.e. reduce_range false, is exact only where
    u8*s8 products accumulate in int32 (VNNI, AMX). On x86 without VNNI, ONNX Runtime's AVX2/AVX-512BW
    kernels add pairs of products in a saturating int16 and the outputs silently go wrong.

    Args:
        manifest: the bundle manifest (`quantization.reduce_range`, the quantize stage's decision, wins
            over the target's `quantization` section).
        cpuinfo: /proc/cpuinfo text.
        machine: platform.machine().
    Returns:
        The refusal message, or None when the model may run here.
    """
    scheme = dict(manifest.get("target", {}).get("quantization") or {}, **(manifest.get("quantization") or {}))
    if scheme.get("reduce_range") is not False or scheme.get("activation_type", "uint8") != "uint8":
        return None
    if machine.lower() not in ("x86_64", "amd64", "i686", "i386"):
        return None
    flags = set()
    for line in cpuinfo.splitlines():
        if line.lower().startswith("flags"):
            flags = set(line.partition(":")[2].lower().split())
            break
    if not flags or flags & set(_VNNI_FLAGS):
        return None  # no cpuinfo to go by (not Linux), or VNNI present
    return ("this model uses full-range INT8 weights (quantize chose reduce_range false), which are exact only "
            "on CPUs with VNNI or AMX; this x86 CPU has neither, so ONNX Runtime's u8*s8 kernels would saturate "
            "and give wrong results. Re-quantize for it: set `quantization: {reduce_range: true}` in the "
            "target file, run `edgepipe run` again and redeploy")


def check_requirements(keys: Sequence[str]) -> bool:
    """Import what the bundle needs; when something does not import, print one line saying what to install.

    Args:
        keys: REQUIREMENTS keys ("numpy", "onnxruntime", "tensorrt", "cuda").
    Returns:
        True when everything imports; False after printing what is missing (and why), how to install it on
        the device, and that `edgepipe deploy --remote-python` can name a Python that has it instead.
    """
    py = sys.executable or "python3"
    missing: List[str] = []
    fixes: List[str] = []
    for key in keys:
        name, fix, modules = REQUIREMENTS[key]
        errors = []
        for module in modules:
            try:
                importlib.import_module(module)
                break
            except ImportError as e:
                errors.append(str(e))
        else:
            missing.append("{} is not importable ({})".format(name, "; ".join(errors)))
            fixes.append(fix.format(py=py))
    if missing:
        print("device_runner: {} in {}: install on the device with {}, or point `edgepipe deploy --remote-python` "
              "at a Python that has {}".format("; ".join(missing), py, " and ".join(fixes),
                                               "them" if len(missing) > 1 else "it"), file=sys.stderr)
    return not missing
