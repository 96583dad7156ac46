"""The ssh argv and the remote command, without a server: host key policy and quoting."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from pipeline.deploy.ssh import SshTarget, explain_ssh_failure, parse_destination, remote_command, ssh_argv
from pipeline.errors import UserError


def test_host_keys_are_always_checked():
    argv = ssh_argv(SshTarget("pi@board"), "true")
    assert "StrictHostKeyChecking=yes" in argv and not any(a.endswith("=no") for a in argv)
    argv = ssh_argv(SshTarget("pi@board", port=2222, identity=Path("k"), known_hosts=Path("kh"),
                              accept_new_host_key=True), "true")
    assert "StrictHostKeyChecking=accept-new" in argv and "UserKnownHostsFile=kh" in argv
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-i") + 1] == "k"
    assert argv[-3:] == ["--", "pi@board", "true"]  # the destination can never be read as an option


def test_remote_command_quotes_every_argument():
    nasty = ["python3", "/x/device runner.py", "--out", "$(reboot)", "a;b", "it's", "`id`"]
    cmd = remote_command(["mkdir", "-p", "--", "d ir"], nasty)
    first, second = cmd.split(" && ")
    assert shlex.split(first) == ["mkdir", "-p", "--", "d ir"] and shlex.split(second) == nasty


@pytest.mark.parametrize("dest", ["pi@raspberrypi.local", "ubuntu@10.0.0.7", "jetson", "nvidia@fe80::1", "a_b@h-1"])
def test_valid_destinations(dest):
    assert parse_destination(dest) == dest


@pytest.mark.parametrize("dest", ["-oProxyCommand=x", "u@-h", "u@h;id", "u@h x", "u@", "@h", "u@h/p", "u@h\n"])
def test_invalid_destinations(dest):
    with pytest.raises(UserError, match="not a valid SSH destination"):
        parse_destination(dest)


def test_ssh_failures_are_explained():
    t = SshTarget("u@h", port=2200, known_hosts=Path("/kh"))
    changed = "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.\n"
    assert "does NOT match" in str(explain_ssh_failure(t, changed))
    assert "ssh-keygen -R '[h]:2200' -f /kh" in str(explain_ssh_failure(t, changed))
    unknown = "No ED25519 host key is known for [h]:2200 and you have requested strict checking.\n" \
              "Host key verification failed.\n"
    assert "is not in /kh" in str(explain_ssh_failure(t, unknown))
    assert "refused the login" in str(explain_ssh_failure(t, "u@h: Permission denied (publickey).\n"))
    assert "cannot reach u@h" in str(explain_ssh_failure(t, "ssh: connect to host h port 2200: Connection refused\n"))
