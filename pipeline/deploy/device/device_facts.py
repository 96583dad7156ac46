"""What the device is and how it is set up, recorded next to every benchmark (standalone, Python >= 3.8).

Latency numbers are only comparable at the same power mode and clocks, so on a Jetson we keep the
board model, the L4T release, `nvpmodel -q` and `jetson_clocks --show` with the results.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            # /proc/device-tree strings end in NUL bytes
            return f.read().replace(b"\x00", b"").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _run(argv: list, timeout: float = 10.0) -> str:
    """Output of a diagnostic command, or "" when it is not installed; never raises."""
    if shutil.which(argv[0]) is None:
        return ""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as e:
        return "<{}: {}>".format(type(e).__name__, e)
    return p.stdout.decode("utf-8", "replace").strip()


def collect(runtime: str = "onnxruntime") -> dict:
    """Board, OS, Python and library versions, and Jetson power/clock state when present.

    Args:
        runtime: the bundle's runtime module ("onnxruntime" or "tensorrt"), whose version is recorded.
    Returns:
        A JSON-ready dict; fields that do not apply to this machine are "" (not missing).
    """
    facts = {
        "machine": platform.machine(),  # `uname -m`: the arch actually measured (a target file only claims one)
        "system": platform.system(),
        "release": platform.release(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "model": _read("/proc/device-tree/model"),
        "nv_tegra_release": _read("/etc/nv_tegra_release"),
        "nvpmodel": _run(["nvpmodel", "-q"]),
        "jetson_clocks": _run(["jetson_clocks", "--show"]),
    }
    try:
        import numpy

        facts["numpy"] = numpy.__version__
    except ImportError:
        facts["numpy"] = ""
    for mod in (runtime,):
        m = sys.modules.get(mod)
        if m is None:
            try:
                m = __import__(mod)
            except Exception:  # not installed, or a broken install: record that it is absent
                m = None
        facts[mod] = getattr(m, "__version__", "") if m else ""
    return facts
