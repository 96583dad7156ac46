"""Fixtures for the deploy tests: a tiny run directory (real torch -> ONNX -> ORT S8S8 QDQ) and a real sshd."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.fileio import sha256_file

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
SHAPE = [1, 1, 8, 8]


def _tiny_model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3),
    ).eval()


def _export(model, path: Path) -> None:
    import torch

    torch.onnx.export(model, torch.zeros(*SHAPE), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)


def _quantize(fp32: Path, out: Path, calib: np.ndarray) -> None:
    """S8S8 symmetric QDQ with float biases: what TensorRT targets (and arm64-cpu) get from the pipeline."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})


@pytest.fixture(scope="session")
def base_run(tmp_path_factory) -> Path:
    """Model files and data shared by every run directory (built once per session)."""
    d = tmp_path_factory.mktemp("base_run")
    for sub in ("export", "quantize", "data"):
        (d / sub).mkdir()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, *SHAPE[1:])).astype(np.float32)
    model = _tiny_model()
    _export(model, d / "export" / "teacher_fp32.onnx")
    import torch

    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy().astype(np.int64)
    np.savez(d / "data" / "eval.npz", x=x, y=y)
    np.savez(d / "data" / "calib.npz", x=x[:16])
    _quantize(d / "export" / "teacher_fp32.onnx", d / "quantize" / "model_int8.onnx", x[:16])
    (d / "report.md").write_text("# edgepipe report\n\ntiny test run\n")
    return d


@pytest.fixture
def roomy_targets(tmp_path, monkeypatch):
    """The repository's targets with arm64-cpu's latency budget raised to 10 s, so a loaded CI machine
    cannot exceed it (tests must not depend on speed); returns the targets folder."""
    from pipeline.targets import targets_dir

    src, d = targets_dir(), tmp_path / "targets"
    shutil.copytree(src, d)
    text = (d / "arm64-cpu.yaml").read_text()
    assert "latency_budget_ms: 20.0" in text
    (d / "arm64-cpu.yaml").write_text(text.replace("latency_budget_ms: 20.0", "latency_budget_ms: 10000.0"))
    monkeypatch.setenv("EDGEPIPE_TARGETS", str(d))
    return d


@pytest.fixture
def make_run(base_run, tmp_path):
    """Factory: a run directory for `target` with manifest.json as pipeline/run_loop.py writes it."""

    def make(target: str, accuracy: float = 0.9, name: str = "run") -> Path:
        d = tmp_path / name
        shutil.copytree(base_run, d)
        final = {
            "path": "quantize/model_int8.onnx", "sha256": sha256_file(d / "quantize" / "model_int8.onnx"),
            "input": {"name": "input", "shape": SHAPE, "dtype": "float32", "layout": "NCHW",
                      "mean": [0.5], "std": [0.5], "dynamic_batch": True},
            "output": {"name": "logits", "shape": [1, 3], "dtype": "float32"},
            "accuracy": accuracy, "latency_ms": {"p50": 0.1, "p90": 0.2, "p99": 0.3}, "runtime": "onnxruntime",
            "teacher_onnx": "export/teacher_fp32.onnx", "eval_data": "data/eval.npz",
        }
        manifest = {"edgepipe_version": "0.1.0", "target": target, "config": "tests", "stages": [],
                    "final": final, "versions": {"python": "3", "onnxruntime": "x"}}
        (d / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return d

    return make


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    """A real OpenSSH server on 127.0.0.1:<random port> with throwaway host and user keys.

    Yields:
        dict(port, identity, known_hosts (holding the server's real host key), empty_known_hosts,
        host_pub, dir).
    """
    if SSHD is None:
        pytest.skip("OpenSSH server binary (sshd) not installed: apt-get install openssh-server")
    d = tmp_path / "sshd"
    d.mkdir()
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    shutil.copyfile(d / "user_key.pub", d / "authorized_keys")
    os.chmod(d / "user_key", 0o600)
    try:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory sshd insists on as root
    except PermissionError:
        pass  # not root: sshd then runs without privilege separation and only lets this user in
    port = _free_port()
    (d / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}", f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", "StrictModes no", "UsePAM no",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "AllowTcpForwarding no", "X11Forwarding no", "PrintMotd no", "",
    ]))
    log = open(d / "sshd.log", "wb")  # noqa: SIM115 (sshd writes to it until the fixture ends)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            log.close()
            pytest.fail(f"sshd exited with {proc.returncode}: {(d / 'sshd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not listen on {port}: {(d / 'sshd.log').read_text()}")
            time.sleep(0.05)
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (d / "empty_known_hosts").write_text("")
    yield {"port": port, "user": getpass.getuser(), "identity": d / "user_key", "known_hosts": d / "known_hosts",
           "empty_known_hosts": d / "empty_known_hosts", "dir": d, "host_pub": host_pub}
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
