"""The host CPU's instruction-set facts that decide an INT8 scheme (standalone, Python >= 3.8).

Which INT8 layout runs fast and exactly on a CPU depends on its dot-product instructions:

- x86 without VNNI (AVX2, or AVX-512 with only BW): ONNX Runtime's U8S8 kernels multiply uint8
  activations by int8 weights with `vpmaddubsw`, which adds each pair of products into a *saturating*
  int16. Two products of 255 * 127 already exceed 32767, so full-range weights can silently clip;
  7-bit weights (`reduce_range`) keep every pair sum in range.
- x86 with VNNI (AVX512_VNNI, AVX-VNNI) or AMX: `vpdpbusd` / AMX tiles accumulate u8*s8 straight into
  int32, so nothing saturates and 8-bit weights are exact.
- ARM: `sdot`/`udot` (`asimddp`) and `smmla`/`ummla` (`i8mm`) accumulate into int32 too; without them
  the NEON kernels widen to int16 before multiplying, which cannot overflow either.

Where the saturation fact comes from: ONNX Runtime's quantization docs. The Python API reference for
`quantize_static`/`quantize_dynamic` (found with the docs search as
https://www.mintlify.com/microsoft/onnxruntime/api/python/quantization) says `reduce_range` means
"Use 7-bit quantization for better accuracy on non-VNNI CPUs"; the `quantize_static` docstring that
page is built from (onnxruntime 1.32, onnxruntime/quantization/quantize.py, "Choosing parameters for
CPU inference") says U8S8 with reduce_range=True on x86 without VNNI "to reduce the risk of integer
saturation", and reduce_range=False with VNNI, whose cores "accumulate 8-bit products without saturation".

Facts come from /proc/cpuinfo (`flags` on x86, `Features` on ARM); `root` points elsewhere for tests.
Base layer, standard library only, so a deploy bundle could ship this file as it is.
"""

from __future__ import annotations

import os
import platform

# Canonical flag names reported in `int8_facts()["flags"]`; every key is always present.
X86_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")
ARM_FLAGS = ("asimddp", "i8mm")
FLAG_NAMES = X86_FLAGS + ARM_FLAGS

# Spellings seen in cpuinfo across kernel versions and tools -> canonical name.
_ALIASES = {"avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni", "amxint8": "amx_int8", "amxtile": "amx_tile"}

# Arm Ltd (implementer 0x41) core part numbers, for a readable model name where cpuinfo has none.
_ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd42": "Cortex-A78AE", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2", "0xd49": "Neoverse-N2", "0xd4b": "Cortex-A78C", "0xd4f": "Neoverse-V2",
}

_X86_MACHINES = ("x86_64", "amd64", "i386", "i686")
_ARM_MACHINES = ("aarch64", "arm64", "armv8l", "armv7l")


def _read(path: str) -> str:
    """A text file's content, "" when it cannot be read (no /proc in a container, another OS)."""
    try:
        with open(path, "rb") as f:
            # /proc/device-tree strings end in NUL bytes
            return f.read().replace(b"\x00", b"").decode("utf-8", "replace")
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> dict:
    """The first processor's fields from /proc/cpuinfo text, keys lower-cased.

    Only the first block is read: Linux reports the same ISA on every core of the SMP systems we target
    (big.LITTLE parts share one Features line per ISA level).
    """
    fields: dict = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _flag_set(fields: dict) -> set:
    """Every flag named in the `flags` (x86) or `Features` (ARM) field, canonical spellings."""
    words = (fields.get("flags", "") + " " + fields.get("features", "")).lower().split()
    return {_ALIASES.get(w, w) for w in words}


def _arch(fields: dict, root: str) -> str:
    """"x86_64", "aarch64" or what Python reports: cpuinfo wins, since `root` may be another machine's."""
    if "flags" in fields or "vendor_id" in fields:
        return "x86_64"
    if "features" in fields or "cpu implementer" in fields:
        return "aarch64"
    if os.path.abspath(root) != "/":
        return "unknown"
    machine = platform.machine().lower()
    if machine in _X86_MACHINES:
        return "x86_64"
    return "aarch64" if machine in _ARM_MACHINES else (machine or "unknown")


def host_arch() -> str:
    """This machine's architecture: "x86_64", "aarch64" or what Python reports (see `_arch`)."""
    return _arch(parse_cpuinfo(_read("/proc/cpuinfo")), "/")


def _cpu_model(fields: dict) -> str:
    """The marketing name on x86; on ARM the core name from the part number (cpuinfo's is generic)."""
    part = fields.get("cpu part", "").lower()
    if fields.get("cpu implementer", "").lower() == "0x41" and part in _ARM_PARTS:
        return _ARM_PARTS[part]
    return fields.get("model name") or fields.get("hardware") or fields.get("processor", "") or "unknown"


def _int8_kernel(arch: str, flags: dict) -> str:
    """The best INT8 dot-product path these flags allow (what ONNX Runtime's kernels can pick)."""
    if arch == "x86_64":
        order = ("amx_int8", "avx512_vnni", "avx_vnni", "avx512bw", "avx2")
        return next((name for name in order if flags[name]), "sse")
    if arch == "aarch64":
        if flags["i8mm"]:
            return "i8mm"
        return "asimddp" if flags["asimddp"] else "neon"
    return "unknown"


def int8_facts(root: str = "/") -> dict:
    """What this CPU's instruction set means for INT8 quantization.

    Args:
        root: the file-system root to read `proc/cpuinfo` (and `proc/device-tree/model`) under;
            tests pass a folder holding another machine's files.
    Returns:
        {"arch": "x86_64" | "aarch64" | ..., "cpu_model": str, "board": str (device-tree model, e.g. a
        Jetson's, else ""), "flags": {name: bool for every name in FLAG_NAMES},
        "vnni": bool (x86 AVX512_VNNI or AVX-VNNI, or AMX-INT8: u8*s8 accumulate in int32),
        "int8_dot_product": bool (VNNI/AMX on x86, SDOT/UDOT or I8MM on ARM),
        "int8_kernel": the best path, e.g. "avx512_vnni", "avx2", "asimddp",
        "u8s8_saturates": bool (x86 without VNNI: u8*s8 pairs saturate int16 in the AVX2/AVX-512BW kernels),
        "recommended_reduce_range": bool (7-bit weights for this host; a model shipped to an unknown x86
        CPU may still want it)}.
    """
    fields = parse_cpuinfo(_read(os.path.join(root, "proc", "cpuinfo")))
    present = _flag_set(fields)
    arch = _arch(fields, root)
    flags = {name: name in present for name in FLAG_NAMES}
    # AMX-INT8 CPUs (Sapphire Rapids on) all have AVX512_VNNI too; counting AMX keeps that true if a
    # hypervisor hides the VNNI bit but passes AMX through.
    vnni = arch == "x86_64" and (flags["avx512_vnni"] or flags["avx_vnni"] or flags["amx_int8"])
    saturates = arch == "x86_64" and not vnni
    return {
        "arch": arch,
        "cpu_model": _cpu_model(fields),
        "board": _read(os.path.join(root, "proc", "device-tree", "model")).strip(),
        "flags": flags,
        "vnni": vnni,
        "int8_dot_product": vnni or (arch == "aarch64" and (flags["asimddp"] or flags["i8mm"])),
        "int8_kernel": _int8_kernel(arch, flags),
        "u8s8_saturates": saturates,
        "recommended_reduce_range": saturates,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(int8_facts(), indent=2))
