#!/usr/bin/env bash
# Install what tracehound needs on a Debian/Ubuntu host, and nothing that is
# already there. Idempotent: a second run does no network I/O and takes ~1 s.
#
#   - bcc from Debian (python3-bpfcc, libbpfcc): the PyPI package "bcc" is an
#     unrelated project and must never be installed.
#   - kernel headers: bcc compiles at run time against them. When the running
#     kernel ships none (no /lib/modules/$(uname -r)/build), Debian's generic
#     headers are installed and linked in. Our programs only use tracepoint
#     arguments and helpers, so a header/kernel version mismatch is harmless.
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

kernel="$(uname -r)"
# python3-yaml, prometheus (for promtool), systemd (systemd-analyze) and
# libcap2-bin (capsh) are for the deployment-file tests.
# e2fsprogs: the evidence tests make a real ext4 that goes read-only.
apt_wanted=(python3-bpfcc libbpfcc python3-venv gcc curl iproute2 util-linux
            python3-yaml prometheus systemd libcap2-bin e2fsprogs)
if [ ! -e "/lib/modules/$kernel/build" ] && [ ! -e /sys/kernel/kheaders.tar.xz ]; then
    apt_wanted+=(linux-headers-amd64)
fi
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

if [ ! -e "/lib/modules/$kernel/build" ] && [ ! -e /sys/kernel/kheaders.tar.xz ]; then
    build="$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)"
    common="$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)"
    if [ -z "$build" ] || [ -z "$common" ]; then
        echo "setup: no kernel headers found under /usr/src after installing linux-headers-amd64" >&2
        exit 1
    fi
    say "kernel $kernel has no headers of its own: linking $build (tracepoint programs only, see notes)"
    mkdir -p "/lib/modules/$kernel"
    ln -sfn "$build" "/lib/modules/$kernel/build"
    ln -sfn "$common" "/lib/modules/$kernel/source"
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
