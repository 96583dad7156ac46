"""Run a bundle on a device over SSH: copy, verify, build, benchmark there, bring the results back.

Only OpenSSH's `ssh` client is used, through argv lists (never a local shell). The command ssh sends to
the device is built with shlex.quote/shlex.join from every argument, since the remote side runs it through
the user's login shell. Host keys are always checked: StrictHostKeyChecking=yes by default, accept-new only
when asked for; the files go over the same connection as a tar stream (no scp quoting rules involved).
"""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.fileio import write_bytes

_USER = r"[A-Za-z0-9_][A-Za-z0-9._-]*"
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+"
_DEST = re.compile(rf"^(?:(?P<user>{_USER})@)?(?P<host>{_HOST})$")
EXIT_INTEGRITY = 3  # device_runner.py: the bundle failed its sha256 check


@dataclass(frozen=True)
class SshTarget:
    """Where and how to reach the device."""

    destination: str
    port: int | None = None
    identity: Path | None = None
    known_hosts: Path | None = None
    accept_new_host_key: bool = False
    connect_timeout: int = 15

    @property
    def host(self) -> str:
        return self.destination.rsplit("@", 1)[-1]


def parse_destination(dest: str) -> str:
    """Validate `user@host` (or `host`): letters, digits, `._-`, IPv6 hex; never an ssh option.

    Raises:
        UserError: naming the value and the allowed form.
    """
    if not isinstance(dest, str) or not _DEST.fullmatch(dest):  # fullmatch: `$` would allow a trailing newline
        raise UserError(f"--device {dest!r} is not a valid SSH destination (allowed: user@host or host; user and "
                        "host made of letters, digits, '.', '_', '-', or an IPv6 address)")
    return dest


def check_remote_path(path: str, what: str = "--remote-dir") -> str:
    """A remote path: non-empty, no newline/NUL, not starting with '-'; relative paths are under the remote home."""
    if not path or "\n" in path or "\x00" in path or path.startswith("-"):
        raise UserError(f"{what} {path!r} is not usable "
                        "(allowed: a path without newlines that does not start with '-')")
    return path


def ssh_argv(t: SshTarget, remote_command: str) -> list[str]:
    """The local argv for `ssh` running `remote_command` (already quoted) on the device."""
    # BatchMode: never prompt (a prompt would hang `make deploy`); ServerAlive: engine builds print nothing
    # for minutes, keep NAT/firewalls from dropping the connection meanwhile.
    argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={t.connect_timeout}",
            "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=6",
            "-o", f"StrictHostKeyChecking={'accept-new' if t.accept_new_host_key else 'yes'}"]
    if t.known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={t.known_hosts}"]
    if t.identity is not None:
        argv += ["-i", str(t.identity), "-o", "IdentitiesOnly=yes"]
    if t.port is not None:
        argv += ["-p", str(t.port)]
    return argv + ["--", t.destination, remote_command]


def remote_command(*argvs: list[str]) -> str:
    """Join argv lists into one remote shell command: each argument quoted, commands chained with &&."""
    return " && ".join(shlex.join([str(a) for a in argv]) for argv in argvs)


def run_remote(t: SshTarget, *argvs: list[str], stdin: bytes | None = None,
               timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run commands on the device; ssh's own failures (exit 255) become a UserError explaining them."""
    try:
        proc = subprocess.run(ssh_argv(t, remote_command(*argvs)), input=stdin, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise UserError("the OpenSSH client 'ssh' is not installed on this machine "
                        "(apt-get install openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"the command on {t.destination} did not finish within {timeout:.0f} s") from None
    if proc.returncode == 255:
        raise explain_ssh_failure(t, proc.stderr.decode("utf-8", "replace"))
    return proc


def explain_ssh_failure(t: SshTarget, stderr: str) -> UserError:
    """Turn ssh's stderr into a message that says what happened and what to do."""
    where = f"{t.host} port {t.port or 22}"
    kh = str(t.known_hosts) if t.known_hosts else "~/.ssh/known_hosts"
    last = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), "no output from ssh")
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or ("Host key for" in stderr and "has changed" in stderr):
        key = f"[{t.host}]:{t.port}" if t.port else t.host
        return UserError(f"the host key of {where} does NOT match the one recorded in {kh}: either the device was "
                         "reinstalled or someone is intercepting the connection. Check the new key's fingerprint on "
                         f"the device (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub); if it is right, remove the "
                         f"old entry with: ssh-keygen -R '{key}' -f {kh}")
    if "Host key verification failed" in stderr or ("No " in stderr and "host key is known" in stderr):
        return UserError(f"the host key of {where} is not in {kh}, and unknown hosts are refused. Verify the "
                         "device's key fingerprint, then add it to known_hosts, or pass --accept-new-host-key to "
                         "trust it on this first connection (later changes are still refused)")
    if "Permission denied" in stderr:
        return UserError(f"{t.destination} refused the login on {where} ({last}); check the user and --identity")
    if any(s in stderr for s in ("Connection refused", "Could not resolve", "timed out", "No route to host",
                                 "Network is unreachable", "Connection closed", "Connection reset")):
        return UserError(f"cannot reach {t.destination} on {where}: {last}")
    return UserError(f"ssh to {t.destination} on {where} failed: {last}")


def _tar_stream(bundle: Path, names: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in names:
            info = tar.gettarinfo(str(bundle / name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(bundle / name, "rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def deploy(t: SshTarget, bundle: Path, manifest_sha256: str, remote_dir: str, remote_python: str = "python3",
           runner_args: list[str] | None = None, results_dir: Path | None = None) -> dict[str, Any]:
    """Copy the bundle, then verify, build and benchmark on the device; bring results and build log back.

    Args:
        t: how to reach the device.
        bundle: the local bundle folder (its manifest lists the files to copy).
        manifest_sha256: sha256 of the local manifest.json, checked on the device before anything runs.
        remote_dir: bundle folder on the device (relative paths are under the remote home).
        remote_python: the device's Python (needs numpy + onnxruntime or TensorRT).
        runner_args: extra device_runner.py arguments (--runs, --no-accuracy, ...).
        results_dir: where results.json (and build.log) are written here (default: BUNDLE/results).
    Returns:
        {"results": dict, "results_path", "build_log_path" (or None), "remote_dir", "machine"}.
    Raises:
        UserError: unreachable host, host key problems, a tampered bundle, a runner failure.
    """
    remote_dir = check_remote_path(remote_dir)
    check_remote_path(remote_python, "--remote-python")
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    names = sorted(manifest["files"]) + ["manifest.json"]
    machine = run_remote(t, ["uname", "-m"], timeout=60).stdout.decode().strip()
    copy = run_remote(t, ["mkdir", "-p", "--", remote_dir], ["tar", "-x", "-m", "-f", "-", "-C", remote_dir],
                      stdin=_tar_stream(bundle, names))
    if copy.returncode != 0:
        raise UserError(f"copying the bundle to {t.destination}:{remote_dir} failed: {_tail(copy.stderr)}")
    rd = remote_dir.rstrip("/") or "/"
    results_remote, log_remote = f"{rd}/results.json", f"{rd}/build.log"
    proc = run_remote(t, [remote_python, f"{rd}/device_runner.py", "--bundle", rd, "--out", results_remote,
                          "--build-log", log_remote, "--expect-manifest-sha256", manifest_sha256, *(runner_args or [])])
    if proc.returncode == EXIT_INTEGRITY:
        err = proc.stderr.decode("utf-8", "replace")
        line = next((ln for ln in err.splitlines() if "refusing this bundle" in ln), _tail(proc.stderr))
        raise UserError(line.split("refusing this bundle: ", 1)[-1]
                        + f" (bundle at {t.destination}:{rd}; the device refused to build or run it)")
    results_dir = results_dir or bundle / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    out = {"results": None, "results_path": None, "build_log_path": None, "remote_dir": rd, "machine": machine,
           "runner_stdout": _tail(proc.stdout)}
    if manifest.get("build"):  # the device built an engine: bring the build log back even when that failed
        log = run_remote(t, ["cat", "--", log_remote])
        if log.returncode == 0:
            out["build_log_path"] = write_bytes(results_dir / "build.log", log.stdout)
    if proc.returncode not in (0, 1):  # 1 = over budget: results are written, the caller decides
        hint = f"; build log: {out['build_log_path']}" if out["build_log_path"] else ""
        raise UserError(f"the device runner failed on {t.destination} (exit {proc.returncode}): "
                        f"{_tail(proc.stderr)}{hint}")
    raw = run_remote(t, ["cat", "--", results_remote]).stdout
    out["results"] = json.loads(raw.decode("utf-8"))
    out["results_path"] = write_bytes(results_dir / "results.json", raw)
    return out


def _tail(data: bytes, lines: int = 5) -> str:
    text = data.decode("utf-8", "replace").strip().splitlines()
    return " | ".join(text[-lines:]) if text else "(no output)"
