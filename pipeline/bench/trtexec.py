"""Write and run the trtexec benchmark command for a TensorRT engine (`trtexec_bench_argv`), then parse its output.

Every performance-relevant flag is spelled out, because defaults changed between major versions:
TensorRT 11 turned CUDA graphs and spin-wait on and host<->device transfers off by default
(`--noCudaGraph`, `--noSpinWait`, `--includeDataTransfers` change that); before 11 they were off
(`--useCudaGraph`, `--useSpinWait`) and transfers on (`--noDataTransfers` removes them).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

DEFAULT_LOCATIONS = ("/usr/src/tensorrt/bin/trtexec",)


@dataclass
class TrtexecSettings:
    """What to measure. Times are in trtexec's units: warm-up in ms, duration in s.

    `include_transfers` decides whether trtexec's "Latency" contains the H2D/D2H copies; keep it the
    same across runs you compare (the result records it as `transfers`).
    """

    warmup_ms: int = 500
    duration_s: float = 10.0
    iterations: int = 100
    avg_runs: int = 10
    cuda_graph: bool = False
    spin_wait: bool = True
    include_transfers: bool = True
    percentiles: Sequence[float] = (90, 95, 99)
    shapes: str | None = None  # e.g. "input:1x3x224x224"
    export_times: str | None = None
    extra: Sequence[str] = ()


def find_trtexec(explicit: str | None = None) -> Path | None:
    """trtexec from `explicit`, else PATH, else /usr/src/tensorrt/bin/trtexec (JetPack's place)."""
    if explicit:
        p = Path(explicit)
        return p if p.is_file() else None
    found = shutil.which("trtexec")
    if found:
        return Path(found)
    for loc in DEFAULT_LOCATIONS:
        if Path(loc).is_file():
            return Path(loc)
    return None


def trtexec_version(exe: Path, timeout: float = 60) -> tuple[int, int, int] | None:
    """Version from the `&&&& RUNNING TensorRT.trtexec [TensorRT vNNNN]` banner of `trtexec --help`."""
    from pipeline.bench.trtexec_parse import decode_version

    try:
        p = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"\[TensorRT v(\d+)\]", p.stdout + p.stderr)
    return decode_version(m.group(1)) if m else None


def trtexec_bench_argv(engine: str | Path, version: Sequence[int], s: TrtexecSettings | None = None,
                       exe: str | Path = "trtexec") -> list[str]:
    """The argv of a trtexec benchmark run of a built engine (the build side is
    `pipeline.build.trtexec.trtexec_build_argv`).

    Args:
        engine: the serialized engine (`--loadEngine`).
        version: TensorRT version of that trtexec, at least (major, minor).
        s: settings; every performance flag is written out explicitly.
        exe: the trtexec path.
    Returns:
        argv list (no shell).
    """
    s = s or TrtexecSettings()
    major, minor = int(version[0]), int(version[1]) if len(version) > 1 else 0
    if major < 7:
        raise UserError(f"trtexec {'.'.join(map(str, version))}: TensorRT 7.0 or newer is needed")
    argv = [str(exe), f"--loadEngine={engine}"]
    if s.shapes:
        argv.append(f"--shapes={s.shapes}")
    argv += [
        f"--warmUp={int(s.warmup_ms)}",
        f"--duration={s.duration_s:g}",
        f"--iterations={int(s.iterations)}",
        f"--avgRuns={int(s.avg_runs)}",
    ]
    if major >= 11:
        # 11.x: graphs and spin-wait are on, copies are off unless asked for
        if not s.cuda_graph:
            argv.append("--noCudaGraph")
        if not s.spin_wait:
            argv.append("--noSpinWait")
        if s.include_transfers:
            argv.append("--includeDataTransfers")
    else:
        if s.cuda_graph:
            argv.append("--useCudaGraph")
        if s.spin_wait:
            argv.append("--useSpinWait")
        if not s.include_transfers:
            argv.append("--noDataTransfers")
    pct = sorted(float(p) for p in s.percentiles)
    if pct:
        if (major, minor) >= (8, 5):  # a comma-separated list is accepted from the 8.5 summary format on
            argv.append("--percentile=" + ",".join(f"{p:g}" for p in pct))
        else:  # older trtexec takes one percentile
            argv.append(f"--percentile={pct[-1]:g}")
    if s.export_times:
        argv.append(f"--exportTimes={s.export_times}")
    argv += list(s.extra)
    return argv


def run_trtexec(engine: str | Path, out_dir: str | Path, s: TrtexecSettings | None = None,
                exe: str | None = None, timeout: float = 900) -> dict[str, Any]:
    """Run trtexec on `engine`, keep its log and times under `out_dir`, and return the result document.

    Raises:
        UserError: no trtexec, no engine, or trtexec failed (its last lines are in the message).
    """
    from pipeline.bench.trtexec_log import import_trtexec
    from pipeline.fileio import write_text

    tool = find_trtexec(exe)
    if tool is None:
        raise UserError("trtexec not found on PATH or at /usr/src/tensorrt/bin/trtexec (it ships with "
                        "TensorRT's tar/deb packages and JetPack, not with pip wheels)")
    engine = Path(engine)
    if not engine.is_file():
        raise UserError(f"TensorRT engine not found: {engine}")
    version = trtexec_version(tool)
    if version is None:
        raise UserError(f"could not read the TensorRT version from `{tool} --help`")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = s or TrtexecSettings()
    s.export_times = str(out / "trtexec_times.json")
    argv = trtexec_bench_argv(engine, version, s, exe=tool)
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"trtexec did not finish within {timeout:.0f} s: {' '.join(argv)}") from None
    log = out / "trtexec.log"
    write_text(log, p.stdout + p.stderr)
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-5:])
        raise UserError(f"trtexec failed (exit {p.returncode}); log {log}:\n{tail}")
    times = Path(s.export_times) if Path(s.export_times).is_file() else None
    doc = import_trtexec(log, times)
    doc["trtexec"]["argv"] = argv
    doc["model"]["path"] = str(engine)
    return doc
