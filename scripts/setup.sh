#!/usr/bin/env bash
# Install what tracehound needs on a Debian/Ubuntu host, and nothing that is
# already there. Idempotent: a second run does no network I/O and takes ~1 s.
#
#   - bcc from Debian (python3-bpfcc, libbpfcc): the PyPI package "bcc" is an
#     unrelated project and must never be installed.
#   - no kernel headers: bcc compiles against bpf/kernel-stub (the few types
#     its own headers need), and every kernel struct offset comes from the
#     running kernel's BTF (headers of another version give wrong offsets).
#   - tracefs mounted at /sys/kernel/tracing.
#   - a venv at .venv made from Debian's /usr/bin/python3 with
#     --system-site-packages (so it sees bcc), with tracehound installed into
#     it in editable mode, plus the test/lint extras.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$here/.venv}"
say() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: must run as root (try: sudo make $*)" >&2
    exit 1
fi

# python3-yaml, prometheus (for promtool), systemd (systemd-analyze) and
# libcap2-bin (capsh) are for the deployment-file tests.
# e2fsprogs: the evidence tests make a real ext4 that goes read-only.
# liburing-dev: the io_uring capture test compiles a liburing program.
# nats-server and postgresql: the fleet tests start their own servers on
# loopback ports in temporary directories (never the system services).
apt_wanted=(python3-bpfcc libbpfcc python3-venv gcc curl iproute2 util-linux
            python3-yaml prometheus systemd libcap2-bin e2fsprogs liburing-dev
            nats-server postgresql)
apt_missing=()
for pkg in "${apt_wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || apt_missing+=("$pkg")
done
if [ "${#apt_missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${apt_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
else
    say "Debian packages present: ${apt_wanted[*]}"
fi


if [ ! -e /sys/kernel/tracing/events ]; then
    say "mounting tracefs at /sys/kernel/tracing"
    mount -t tracefs nodev /sys/kernel/tracing
fi

if [ ! -x "$venv/bin/python" ]; then
    say "creating venv $venv from /usr/bin/python3 (with system site-packages for bcc)"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
stamp="$venv/.tracehound-installed"
if [ ! -e "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
    say "installing tracehound and its Python dependencies into $venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e "$here[test]"
    touch "$stamp"
else
    say "venv up to date: $venv"
fi
