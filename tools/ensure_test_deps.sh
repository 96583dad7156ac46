#!/usr/bin/env bash
# Install the system programs the test suite needs, where this machine allows it. Used by `make test`
# and `.ci/run` (the logic lives here only). Never fails: when something cannot be installed it says
# why, and the tests that need it are skipped and listed, with the reason, at the end of the run.
#
# Needed: OpenSSH server and client (sshd, ssh, ssh-keygen): the SSH deploy tests start a real sshd
# on 127.0.0.1. Installed with apt-get when we are root; otherwise the command to run is printed.
# Set EDGEPIPE_NO_SYSTEM_INSTALL=1 to never install anything (the check still reports).
set -u

have_sshd() {
  command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]
}

note() {
  echo "ensure_test_deps: $*" >&2
}

if have_sshd && command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1; then
  exit 0
fi
pkgs="openssh-server openssh-client"
if [ "${EDGEPIPE_NO_SYSTEM_INSTALL:-}" = "1" ]; then
  note "OpenSSH server/client missing and EDGEPIPE_NO_SYSTEM_INSTALL=1: the SSH tests will be skipped"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  note "OpenSSH server/client missing and no apt-get here: install them with your package manager" \
       "(e.g. $pkgs) or the SSH tests will be skipped"
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  note "OpenSSH server/client missing and not root: run 'sudo apt-get install -y $pkgs'" \
       "or the SSH tests will be skipped"
  exit 0
fi
note "installing $pkgs (the SSH deploy tests start a real sshd on 127.0.0.1)"
log="$(mktemp)"
if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs; } \
     >"$log" 2>&1 && have_sshd; then
  note "installed $pkgs"
else
  note "could not install $pkgs; the SSH tests will be skipped. Last lines of apt-get's output:"
  tail -n 5 "$log" | sed 's/^/  /' >&2
fi
rm -f "$log"
exit 0
