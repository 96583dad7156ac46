"""Run a command and measure its memory: the largest process's peak RSS, overall and per pipeline stage.

Used by `real_size_distill.py` to run `python -m pipeline run ...` as a subprocess. Three measurements:

- `stages[name]["peak_rss_bytes"]`: the largest process's peak RSS while stage `name` ran. Stages are
  recognised from the pipeline's log lines (`▶ distill: ...` starts a stage, `✓ distill: done ...` ends
  it). At a stage's start every process's `VmHWM` is reset (`echo 5 > /proc/<pid>/clear_refs`, Linux
  >= 4.0), so the stage's number is that process's true peak since then; where the reset is refused,
  the stage's number is the largest `VmRSS` sampled instead (`peak_method` says which).
- `max_rss_bytes`: the largest process's peak RSS over the whole run: the maximum of `ru_maxrss` from
  `os.wait4` on the child (Linux folds each waited-for descendant's peak into its parent's, so this
  covers the DataLoader workers too), every `VmHWM` read just before a reset, and every `VmHWM` polled.
  The resets are why `ru_maxrss` alone is not enough: it reads the same counter they clear.

Standard library only; Linux only (`/proc`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

STAGE_START = re.compile(r"▶ (\w+):")
STAGE_END = re.compile(r"✓ (\w+): (done|cached|skipped)")


def parent_map() -> dict[int, int]:
    """pid -> parent pid for every process visible in /proc."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # Field 2 (the command name) is in parentheses and may hold spaces: split after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        out[int(entry.name)] = int(fields[1])
    return out


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_map().items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def memory_of(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a process in bytes, or None when it has gone (or is a zombie)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024  # reported in kB
    if len(values) < 2:
        return None
    return values["VmRSS"], values["VmHWM"]


def reset_peak(pid: int) -> tuple[bool, int]:
    """Reset a process's VmHWM to its current RSS.

    Returns:
        (whether the kernel allowed it, the VmHWM just before, 0 if the process has gone).
    """
    mem = memory_of(pid)
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True, 0 if mem is None else mem[1]
    except OSError:
        return False, 0 if mem is None else mem[1]


@dataclass
class StagePeak:
    """Memory and time of one stage, as seen from outside."""

    started: float
    ended: float | None = None
    peak_rss_bytes: int = 0  # the largest process (VmHWM since the stage's reset, or sampled VmRSS)
    tree_rss_bytes: int = 0  # the largest sum of VmRSS over the tree in one poll (counts shared pages twice)
    reset_ok: bool = True

    def as_dict(self, t0: float) -> dict[str, Any]:
        """JSON form, times relative to the run's start."""
        return {"start_s": round(self.started - t0, 2),
                "seconds": None if self.ended is None else round(self.ended - self.started, 2),
                "peak_rss_bytes": self.peak_rss_bytes, "peak_rss_mb": round(self.peak_rss_bytes / 1e6, 1),
                "tree_rss_sum_mb": round(self.tree_rss_bytes / 1e6, 1),
                "peak_method": "VmHWM reset at stage start" if self.reset_ok else "largest sampled VmRSS"}


@dataclass
class Watch:
    """Shared state between the log reader thread and the polling loop."""

    t0: float
    log: TextIO
    echo: bool
    stages: dict[str, StagePeak] = field(default_factory=dict)
    current: str | None = None
    peak: int = 0  # the largest VmHWM polled or read before a reset
    ended: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _read_log(stream: TextIO, watch: Watch, root: int) -> None:
    """Copy the child's stderr to the log (and our stderr), noting stage starts and ends."""
    for line in stream:
        watch.log.write(line)
        watch.log.flush()
        if watch.echo:
            sys.stderr.write(line)
            sys.stderr.flush()
        now = time.perf_counter()
        with watch.lock:
            watch.tail = (watch.tail + [line.rstrip()])[-30:]
            if m := STAGE_START.search(line):
                resets = [reset_peak(pid) for pid in process_tree(root)]
                before = max([0] + [hwm for _, hwm in resets])
                watch.peak = max(watch.peak, before)
                if not watch.stages:  # everything before the first stage: config, data loading and checks
                    watch.stages["(startup)"] = StagePeak(started=watch.t0, ended=now, peak_rss_bytes=before)
                watch.stages[m.group(1)] = StagePeak(started=now, reset_ok=all(ok for ok, _ in resets))
                watch.current = m.group(1)
            elif (m := STAGE_END.search(line)) and m.group(1) in watch.stages:
                watch.stages[m.group(1)].ended = now
                watch.ended.append(m.group(1))
                watch.current = None


def _poll(watch: Watch, root: int) -> None:
    """One poll: the largest VmHWM overall, and the current stage's peak."""
    rss_sum, biggest_hwm, biggest_rss = 0, 0, 0
    for pid in process_tree(root):
        mem = memory_of(pid)
        if mem is None:
            continue
        rss_sum += mem[0]
        biggest_rss, biggest_hwm = max(biggest_rss, mem[0]), max(biggest_hwm, mem[1])
    with watch.lock:
        watch.peak = max(watch.peak, biggest_hwm)
        stage = watch.stages.get(watch.current) if watch.current else None
        if stage is not None:
            stage.peak_rss_bytes = max(stage.peak_rss_bytes, biggest_hwm if stage.reset_ok else biggest_rss)
            stage.tree_rss_bytes = max(stage.tree_rss_bytes, rss_sum)


def _interrupt(pid: int, grace_s: float) -> tuple[int, Any]:
    """Ask the child to stop (SIGINT, as Ctrl-C would), SIGKILL its process group after `grace_s`; reap it.

    Returns:
        `os.wait4`'s (status, rusage) of the child.
    """
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)  # the child leads its own group (start_new_session): only its tree
    except ProcessLookupError:
        pass
    return os.wait4(pid, 0)[1:]


def run_watched(argv: list[str], log_path: Path, *, stop_after: str | None = None, timeout_s: float = 3600,
                interval_s: float = 0.5, echo: bool = True, env: dict | None = None) -> dict[str, Any]:
    """Run `argv`, tee its stderr to `log_path`, and measure time and memory (see the module docstring).

    Args:
        argv: the command.
        log_path: file receiving the child's stdout and stderr.
        stop_after: interrupt the child once this stage has ended (e.g. "distill"); None runs it to the end.
        timeout_s: interrupt the child after this many seconds.
        interval_s: polling period.
        echo: also copy the child's stderr to ours.
        env: the child's environment (default: ours).
    Returns:
        returncode, wall_s, max_rss_bytes and max_rss_mb (the largest process, whole run), stages
        {name: StagePeak.as_dict} in order ("(startup)": from the start to the first stage, e.g. loading
        data), stopped_after (the stage it was stopped after, or None), timed_out, log, log_tail (last 30
        stderr lines).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        t0 = time.perf_counter()
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                 errors="replace", start_new_session=True, env=env)
        watch = Watch(t0=t0, log=log, echo=echo)
        reader = threading.Thread(target=_read_log, args=(child.stderr, watch, child.pid), daemon=True)
        reader.start()
        stopped, timed_out = None, False
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            _poll(watch, child.pid)
            with watch.lock:
                done = stop_after is not None and stop_after in watch.ended
            if done or time.perf_counter() - t0 > timeout_s:
                stopped, timed_out = (stop_after, False) if done else (None, True)
                status, usage = _interrupt(child.pid, grace_s=60)
                break
            time.sleep(interval_s)
        wall = time.perf_counter() - t0
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
        reader.join(timeout=10)
    with watch.lock:
        stages = {name: s.as_dict(t0) for name, s in watch.stages.items()}
        tail, peak = list(watch.tail), max(watch.peak, usage.ru_maxrss * 1024)
    return {"returncode": child.returncode, "wall_s": round(wall, 2), "max_rss_bytes": peak,
            "max_rss_mb": round(peak / 1e6, 1), "stages": stages, "stopped_after": stopped,
            "timed_out": timed_out, "log": str(log_path), "log_tail": tail}
