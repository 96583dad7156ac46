"""What the device is and how it is set up, recorded next to every benchmark (standalone, Python >= 3.8).

Latency numbers are only comparable at the same power mode and clocks, so on a Jetson we keep the
board model, the L4T release, `nvpmodel -q` and `jetson_clocks --show` with the results: the raw text
and what it says (`jetson`: power mode name and id, clocks pinned or not, L4T release). The parsers
are tested on outputs posted from real boards (tests/fixtures/jetson/SOURCES.md).

Base layer, standard library only: `pipeline.bench.fingerprint` uses the parsers on the host, and deploy
bundles ship this file as `device_facts.py` for the device runner.
"""

from __future__ import annotations

import os
import platform
import re
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
        return f"<{type(e).__name__}: {e}>"
    return p.stdout.decode("utf-8", "replace").strip()


def parse_l4t(text: str) -> dict:
    """`# R35 (release), REVISION: 4.1, GCID: ..., BOARD: t186ref, ...` (first line of /etc/nv_tegra_release).

    Returns:
        {"release": "35.4.1", "major": 35, "board": "t186ref"} with None for what the text lacks.
    """
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)", text or "")
    board = re.search(r"BOARD:\s*([^,\s]+)", text or "")
    return {"release": f"{m.group(1)}.{m.group(2)}" if m else None,
            "major": int(m.group(1)) if m else None, "board": board.group(1) if board else None}


def parse_nvpmodel(text: str) -> dict:
    """Power mode from `nvpmodel -q` (also `--verbose`, and with NVPM ERROR lines when run without sudo).

    The mode's name follows `NV Power Mode:`; its id is the number alone on the next line.
    Returns:
        {"name": "MAXN", "id": 0} with None for what the text lacks.
    """
    lines = (text or "").splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"NV Power Mode(?:\[(\d+)\])?:\s*(\S.*?)\s*$", line)
        if not m:
            continue
        mode_id = int(m.group(1)) if m.group(1) else None
        nxt = next((ln.strip() for ln in lines[i + 1:] if ln.strip()), "")
        if mode_id is None and re.fullmatch(r"\d+", nxt):
            mode_id = int(nxt)
        return {"name": m.group(2), "id": mode_id}
    return {"name": None, "id": None}


def _fields(text: str) -> dict:
    return {k.lower(): v for k, v in re.findall(r"(\w+)=(\S+)", text)}


def parse_jetson_clocks(text: str) -> dict:
    """`jetson_clocks --show`: are CPU and GPU clocks pinned (what `sudo jetson_clocks` does)?

    Pinned means every online CPU's MinFreq equals its MaxFreq and so does the GPU's; a power mode
    alone can pin the CPUs (a Nano in 5W) while the GPU still scales, which is "off".
    Returns:
        {"state": "on" | "off" | "unknown", "soc", "machine", "power_mode", "cpus_pinned",
         "gpu": {"min", "max", "current"} or None, "emc_override": bool or None}.
    """
    out = {"state": "unknown", "soc": None, "machine": None, "power_mode": None, "cpus_pinned": None,
           "gpu": None, "emc_override": None}
    cpus = []
    for line in (text or "").splitlines():
        line = line.strip()
        m = re.match(r"SOC family:\s*(\S+)\s+Machine:\s*(.+)$", line)
        if m:
            out["soc"], out["machine"] = m.group(1), m.group(2).strip()
            continue
        m = re.match(r"cpu\d+:\s*(.*)$", line)
        if m:
            f = _fields(m.group(1))
            if f.get("online", "1") == "1" and "minfreq" in f and "maxfreq" in f:
                cpus.append(f["minfreq"] == f["maxfreq"])
            continue
        if line.startswith("GPU ") and "MinFreq=" in line:
            f = _fields(line)
            out["gpu"] = {k: int(f[k + "freq"]) for k in ("min", "max", "current") if (k + "freq") in f}
        elif line.startswith("EMC ") and "FreqOverride=" in line:
            out["emc_override"] = _fields(line).get("freqoverride") == "1"
        elif line.startswith("NV Power Mode"):
            out["power_mode"] = parse_nvpmodel(line)["name"]
    out["cpus_pinned"] = all(cpus) if cpus else None
    gpu = out["gpu"]
    gpu_pinned = gpu["min"] == gpu["max"] if gpu and "min" in gpu and "max" in gpu else None
    known = [x for x in (out["cpus_pinned"], gpu_pinned) if x is not None]
    if known:
        out["state"] = "on" if all(known) else "off"
    return out


def jetson_summary(model: str, l4t: str, nvpmodel: str, clocks: str) -> dict:
    """What the raw Jetson texts say; {} off a Jetson (none of them present)."""
    if not (l4t or nvpmodel or clocks or "jetson" in (model or "").lower()):
        return {}
    mode = parse_nvpmodel(nvpmodel)
    jc = parse_jetson_clocks(clocks)
    return {"model": model or jc["machine"], "l4t_release": parse_l4t(l4t)["release"],
            "power_mode": mode["name"] or jc["power_mode"], "power_mode_id": mode["id"],
            "jetson_clocks": jc["state"]}


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
    facts["jetson"] = jetson_summary(facts["model"], facts["nv_tegra_release"], facts["nvpmodel"],
                                     facts["jetson_clocks"])
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
