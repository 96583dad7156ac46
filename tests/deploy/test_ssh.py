"""`edgepipe deploy --device` against a real OpenSSH server on 127.0.0.1 (the arm64-cpu / ORT path)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.fileio import sha256_file

pytestmark = pytest.mark.ssh


def _ssh_args(sshd, known_hosts=None, remote_dir=None):
    return ["--device", f"{sshd['user']}@127.0.0.1", "--port", str(sshd["port"]), "--identity", str(sshd["identity"]),
            "--known-hosts", str(known_hosts or sshd["known_hosts"]),
            "--remote-dir", str(remote_dir or sshd["dir"] / "remote" / "bundle"),
            "--remote-python", sys.executable]  # the device's python: this venv has numpy + onnxruntime


def test_deploy_end_to_end_over_ssh(make_run, sshd, roomy_targets, tmp_path, capsys):
    run = make_run("arm64-cpu")
    dist = tmp_path / "dist" / "arm64-cpu"
    remote = sshd["dir"] / "remote" / "bundle"
    rc = main(["deploy", "--run", str(run), "--target", "arm64-cpu", "--dist", str(dist),
               "--json", str(tmp_path / "summary.json"), *_ssh_args(sshd, remote_dir=remote)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads(out)
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    dev = summary["device"]
    assert dev["verified"] is True and dev["remote_dir"] == str(remote)
    assert dev["machine"] == __import__("platform").machine()  # `uname -m` on the device, whatever the target says
    # the bundle arrived intact: every file on the "device" has the manifest's hash
    manifest = json.loads((dist / "manifest.json").read_text())
    assert (remote / "manifest.json").read_bytes() == (dist / "manifest.json").read_bytes()
    for rel, info in manifest["files"].items():
        assert sha256_file(remote / rel) == info["sha256"]
    # the results came back and are the device runner's
    results = json.loads(Path(dev["results"]).read_text())
    assert Path(dev["results"]) == dist / "results" / "results.json"
    assert results == json.loads((remote / "results.json").read_text())
    assert results["verified"] and results["latency_ms"]["batch_1"]["runs"] == 200
    assert results["bundle_manifest_sha256"] == sha256_file(dist / "manifest.json")
    assert dev["latency_ms"]["p50"] == pytest.approx(results["latency_ms"]["batch_1"]["p50"], abs=1e-4)
    assert dev["accuracy"] == results["accuracy"]["accuracy"]
    assert dev["budget"]["ms"] == 10000.0 and dev["budget"]["exceeded"] is False


def test_tampered_bundle_is_refused_on_the_device(make_run, sshd, tmp_path, capsys):
    dist = tmp_path / "dist"
    assert main(["deploy", "--run", str(make_run("arm64-cpu")), "--target", "arm64-cpu", "--dist", str(dist)]) == 0
    model = dist / "model_int8.onnx"
    expected = sha256_file(model)
    model.write_bytes(model.read_bytes()[:-1] + b"\x01")  # one byte changed after the bundle was made
    got = sha256_file(model)
    capsys.readouterr()
    rc = main(["deploy", "--bundle", str(dist), *_ssh_args(sshd)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"sha256 mismatch for model_int8.onnx on the device: expected {expected} got {got}" in err
    assert "refused" in err
    remote = sshd["dir"] / "remote" / "bundle"
    assert (remote / "model_int8.onnx").is_file() and not (remote / "results.json").exists()
    assert not (dist / "results").exists()


def test_unknown_host_key_is_refused_without_accept_new(make_run, sshd, tmp_path, capsys):
    dist = tmp_path / "dist"
    main(["deploy", "--run", str(make_run("arm64-cpu")), "--target", "arm64-cpu", "--dist", str(dist)])
    capsys.readouterr()
    kh = sshd["empty_known_hosts"]
    rc = main(["deploy", "--bundle", str(dist), *_ssh_args(sshd, known_hosts=kh)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "host key of 127.0.0.1 port" in err and "is not in" in err and "--accept-new-host-key" in err
    assert kh.read_text() == "" and not (sshd["dir"] / "remote").exists(), "nothing may reach an unverified host"
    # with the explicit option the key is recorded (trust on first use) and the deploy goes through
    rc = main(["deploy", "--bundle", str(dist), "--accept-new-host-key", *_ssh_args(sshd, known_hosts=kh)])
    assert rc == 0, capsys.readouterr().err
    assert sshd["host_pub"][1] in kh.read_text()


def test_changed_host_key_is_refused_even_with_accept_new(make_run, sshd, tmp_path, capsys):
    dist = tmp_path / "dist"
    main(["deploy", "--run", str(make_run("arm64-cpu")), "--target", "arm64-cpu", "--dist", str(dist)])
    capsys.readouterr()
    other = tmp_path / "other_key"
    __import__("subprocess").run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kh = tmp_path / "kh"
    kh.write_text(f"[127.0.0.1]:{sshd['port']} " + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
    rc = main(["deploy", "--bundle", str(dist), "--accept-new-host-key", *_ssh_args(sshd, known_hosts=kh)])
    err = capsys.readouterr().err
    assert rc == 2 and "does NOT match" in err and "ssh-keygen -R" in err


def test_budget_exceeded_on_the_device_exits_1(make_run, sshd, tmp_path, monkeypatch, capsys):
    from pipeline.targets import targets_dir

    tdir = tmp_path / "targets"
    tdir.mkdir()
    text = (targets_dir() / "arm64-cpu.yaml").read_text()
    text = text.replace("latency_budget_ms: 20.0", "latency_budget_ms: 0.000001")
    (tdir / "arm64-cpu.yaml").write_text(text)
    monkeypatch.setenv("EDGEPIPE_TARGETS", str(tdir))
    dist = tmp_path / "dist"
    rc = main(["deploy", "--run", str(make_run("arm64-cpu")), "--target", "arm64-cpu", "--dist", str(dist),
               "--no-accuracy", *_ssh_args(sshd)])
    out, err = capsys.readouterr()
    assert rc == 1, err
    assert "budget exceeded" in err and "p99 latency" in err
    assert json.loads(out)["device"]["budget"]["exceeded"] is True
    assert (dist / "results" / "results.json").is_file()


def test_unreachable_host_and_bad_device_strings(make_run, sshd, tmp_path, capsys):
    dist = tmp_path / "dist"
    main(["deploy", "--run", str(make_run("arm64-cpu")), "--target", "arm64-cpu", "--dist", str(dist)])
    capsys.readouterr()
    closed = sshd["port"] + 1 if sshd["port"] < 65535 else sshd["port"] - 1
    args = _ssh_args(sshd)
    args[args.index("--port") + 1] = str(closed)
    assert main(["deploy", "--bundle", str(dist), *args]) == 2
    assert f"cannot reach {sshd['user']}@127.0.0.1" in capsys.readouterr().err
    for bad in ("-oProxyCommand=touch /tmp/pwned", "root@host;rm -rf /", "a b@c", ""):
        args = _ssh_args(sshd)
        args[args.index("--device") + 1] = bad
        assert main(["deploy", "--bundle", str(dist), *args]) == 2
        assert "is not a valid SSH destination" in capsys.readouterr().err


def test_remote_dir_with_shell_metacharacters_is_quoted(make_run, sshd, tmp_path, capsys):
    dist = tmp_path / "dist"
    main(["deploy", "--run", str(make_run("arm64-cpu")), "--target", "arm64-cpu", "--dist", str(dist)])
    capsys.readouterr()
    canary = tmp_path / "canary"
    remote = sshd["dir"] / f"odd dir; touch {canary}; $(touch {canary}) 'x'"
    rc = main(["deploy", "--bundle", str(dist), "--no-accuracy", *_ssh_args(sshd, remote_dir=remote)])
    assert rc == 0, capsys.readouterr().err
    assert (remote / "results.json").is_file() and not canary.exists()
    shutil.rmtree(remote)
