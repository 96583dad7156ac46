"""Environment fingerprint: what a latency number depends on besides the model.

CPU model and performance-relevant flags, cores and threads, OS, Python and runtime versions; GPU
name, driver and clocks from nvidia-smi when present; on a Jetson the module model, the L4T release,
the nvpmodel power mode and whether jetson_clocks has pinned the clocks. Every probe is best-effort
and time-limited: a missing tool gives None, never an exception.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# CPU flags that change which kernels ONNX Runtime / PyTorch pick (x86 cpuinfo "flags", ARM "Features")
PERF_FLAGS = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimdhp", "asimddp", "fphp", "i8mm", "bf16", "sve", "sve2",
)
PACKAGES = ("onnxruntime", "onnxruntime-gpu", "torch", "onnx", "tensorrt", "numpy")


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel.lstrip("/")).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def _run(argv: list[str], timeout: float = 5.0, any_status: bool = False) -> str | None:
    """stdout of a diagnostic command (None when absent, timed out, or failed unless `any_status`:
    `nvpmodel -q` without sudo prints the mode, then NVPM ERROR lines, and may exit non-zero)."""
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    try:
        p = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode == 0 or any_status:
        return (p.stdout + ("\n" + p.stderr if any_status else "")).strip() or None
    return None


def cpu_info(root: Path = Path("/")) -> dict[str, Any]:
    """CPU model, performance flags, governor, and logical / usable core counts."""
    text = _read(root, "proc/cpuinfo") or ""
    model = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = val.strip()
        elif key in ("flags", "features"):
            flags.update(val.split())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "model": model or platform.processor() or None,
        "arch": platform.machine(),
        "flags": sorted(f for f in flags if f in PERF_FLAGS),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "governor": _read(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
    }


def versions() -> dict[str, str | None]:
    """Python and installed runtime versions, read from package metadata (nothing is imported)."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    for mod in ("onnxruntime", "torch", "tensorrt"):  # already imported: the version actually in use
        if mod in sys.modules and getattr(sys.modules[mod], "__version__", None):
            out[mod] = sys.modules[mod].__version__
    return out


def gpu_info() -> list[dict[str, Any]] | None:
    """Per-GPU name, driver, current/max SM and memory clocks and power limit from nvidia-smi."""
    fields = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,persistence_mode"
    out = _run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"])
    if not out:
        return None
    keys = ["name", "driver", "sm_clock_mhz", "sm_clock_max_mhz", "mem_clock_mhz", "mem_clock_max_mhz",
            "power_limit_w", "persistence_mode"]
    rows = [line for line in out.splitlines() if line.strip()]
    return [dict(zip(keys, (v.strip() for v in line.split(",")), strict=False)) for line in rows]


def jetson_info(root: Path = Path("/")) -> dict[str, Any] | None:
    """Jetson module model, L4T release, nvpmodel mode and jetson_clocks state (None off a Jetson)."""
    model = _read(root, "proc/device-tree/model")
    l4t = _read(root, "etc/nv_tegra_release")
    if not l4t and not (model and ("jetson" in model.lower() or "nvidia" in model.lower())):
        return None
    from pipeline.device_facts import parse_jetson_clocks, parse_l4t, parse_nvpmodel

    release = (parse_l4t(l4t)["release"] or l4t.splitlines()[0]) if l4t else None
    nvp = _run(["nvpmodel", "-q"], any_status=True)
    mode = parse_nvpmodel(nvp or "")
    clocks = jetson_clocks_state(root)
    if clocks == "unknown":
        # sysfs said nothing: `jetson_clocks --show` tells, when we may run it (it needs root)
        clocks = parse_jetson_clocks(_run(["jetson_clocks", "--show"]) or "")["state"]
    return {
        "model": model,
        "l4t_release": release,
        "l4t_raw": l4t.splitlines()[0] if l4t else None,
        "nvpmodel": mode["name"] or (nvp.splitlines()[0] if nvp else None),
        "nvpmodel_id": mode["id"],
        "jetson_clocks": clocks,
    }


def jetson_clocks_state(root: Path = Path("/")) -> str:
    """"on" when CPU and GPU clocks are pinned (min == max frequency), "off" when not, else "unknown".

    jetson_clocks sets every scaling_min_freq to its max; reading that back needs no root, unlike
    `jetson_clocks --show`.
    """
    pinned = []
    cpu = root / "sys/devices/system/cpu"
    for d in sorted(cpu.glob("cpu[0-9]*/cpufreq")):
        lo, hi = _read(d, "scaling_min_freq"), _read(d, "scaling_max_freq")
        if lo and hi:
            pinned.append(lo == hi)
    for d in sorted((root / "sys/class/devfreq").glob("*")):
        name = d.name.lower()
        if "gpu" in name or name.startswith(("17000000", "57000000")) or "gv11b" in name or "ga10b" in name:
            lo, hi = _read(d, "min_freq"), _read(d, "max_freq")
            if lo and hi:
                pinned.append(lo == hi)
    if not pinned:
        return "unknown"
    return "on" if all(pinned) else "off"


def fingerprint(threads: int | None = None, root: str | os.PathLike = "/") -> dict[str, Any]:
    """The environment a measurement was taken in.

    Args:
        threads: the thread count the runtime was given (None: the runtime's default).
        root: filesystem root for /proc, /sys and /etc (tests point it at a fake tree).
    Returns:
        A JSON-able dict: cpu, threads_used, os, versions, gpu (or None), jetson (or None).
    """
    r = Path(root)
    return {
        "cpu": cpu_info(r),
        "threads_used": threads,
        "load_avg_1m": _load(),
        "os": {"system": platform.system(), "release": platform.release(), "platform": platform.platform()},
        "hostname_hash": _short_hash(platform.node()),
        "versions": versions(),
        "gpu": gpu_info(),
        "jetson": jetson_info(r),
    }


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _short_hash(text: str) -> str:
    import hashlib

    # a hash, not the name: result files get shared, and only "same machine or not" matters
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Human-readable differences that make two measurements hard to compare."""
    out = []
    checks = [
        ("CPU model", ("cpu", "model")), ("usable cores", ("cpu", "usable_cores")),
        ("threads", ("threads_used",)), ("CPU governor", ("cpu", "governor")),
        ("onnxruntime", ("versions", "onnxruntime")), ("torch", ("versions", "torch")),
        ("tensorrt", ("versions", "tensorrt")), ("Jetson power mode", ("jetson", "nvpmodel")),
        ("jetson_clocks", ("jetson", "jetson_clocks")), ("L4T", ("jetson", "l4t_release")),
    ]
    for label, path in checks:
        va, vb = _get(a, path), _get(b, path)
        if va != vb and not (va is None and vb is None):
            out.append(f"{label}: {vb!r} (baseline) vs {va!r} (new)")
    cores = _get(a, ("cpu", "usable_cores")) or _get(b, ("cpu", "usable_cores")) or 1
    for name, fp in (("new", a), ("baseline", b)):
        load = fp.get("load_avg_1m")
        if isinstance(load, (int, float)) and load > cores:
            out.append(f"the {name} run was made on an oversubscribed machine (load {load:.1f} on {cores} cores): "
                       "tail percentiles are dominated by other processes")
    ga, gb = _get(a, ("gpu",)), _get(b, ("gpu",))
    if ga and gb and [g.get("name") for g in ga] != [g.get("name") for g in gb]:
        out.append("GPU model differs")
    return out


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d
