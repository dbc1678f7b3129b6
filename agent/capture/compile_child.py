"""The short-lived process that compiles, loads and attaches with bcc.

bcc compiles C with libclang and libLLVM: importing it maps ~80 MiB of
libraries and leaves the compiler's heap behind, which a daemon would carry
for its whole life to do a few map reads afterwards. So the daemon starts
this module in a child (:func:`agent.capture.loader.load` does), sends it
the :class:`~agent.capture.loader.LoadOptions`, and gets back over the
socketpair the descriptors it needs (the maps it reads, and the attachment
of every tracepoint: perf-event fds and raw-tracepoint fds, which keep the
programs attached for as long as someone holds them) with a
:class:`~agent.capture.loader.Manifest` that says what each one is.

The child then leaves with ``os._exit``: bcc's atexit cleanup would
``PERF_EVENT_IOC_DISABLE`` and close the very attachments just handed over.

What can go wrong: anything that stops the capture (no bcc, a compile
error) is sent back as the manifest's one-line ``error`` for the daemon to
report; a probe that does not attach is a status, as before. If the daemon
is gone (the socket is closed) the child just exits, and its descriptors
with it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from agent.capture import handoff
from agent.capture.loader import (
    MAPS_HANDED_OVER,
    CaptureError,
    LoadOptions,
    Manifest,
    ProbeStatus,
    compile_flags,
    plan_probes,
    program_text,
)
from agent.capture.probes import Probe


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _attach(bpf: Any, probe: Probe, tracepoint: str, fn_name: str) -> int:
    """Attach one handler; the attachment's fd."""
    if probe.raw:
        event = tracepoint.partition(":")[2].encode()
        bpf.attach_raw_tracepoint(tp=event, fn_name=fn_name.encode())
        return int(bpf.raw_tracepoint_fds[event])
    bpf.attach_tracepoint(tp=tracepoint.encode(), fn_name=fn_name.encode())
    return int(bpf.tracepoint_fds[tracepoint.encode()])


def _syscall_names() -> dict[int, str]:
    from bcc import syscall as bcc_syscall

    return {
        int(nr): (name.decode() if isinstance(name, bytes) else str(name))
        for nr, name in bcc_syscall.syscalls.items()
    }


def compile_and_attach(options: LoadOptions) -> tuple[Manifest, list[int]]:
    """Compile, load, attach; the manifest and the fds it describes (maps
    first, then attachments). Raises CaptureError when nothing can work."""
    try:
        from bcc import BPF
    except ImportError as err:
        raise CaptureError(
            "the bcc Python bindings are missing: install Debian's python3-bpfcc"
            " (sudo make run does), and use a venv made with --system-site-packages"
        ) from err

    present, statuses = plan_probes(options.probes)
    if not present:
        raise CaptureError("none of the configured probes' tracepoints exist on this kernel")
    try:
        bpf = BPF(text=program_text(present).encode(), cflags=compile_flags(options, present))
    except Exception as err:
        raise CaptureError(f"compiling the BPF programs failed: {_first_line(err)}") from err

    attached: list[str] = []
    fds: list[int] = []
    for probe in present:
        done: list[int] = []
        try:
            for tracepoint, fn_name in probe.attach:
                done.append(_attach(bpf, probe, tracepoint, fn_name))
        except Exception as err:
            for fd in done:  # nobody else holds these: closing detaches
                with contextlib.suppress(OSError):
                    os.close(fd)
            reason = f"attach failed: {_first_line(err)}"
            statuses.append(ProbeStatus(probe.name, probe.kind, False, reason))
        else:
            fds.extend(done)
            attached.extend(tp for tp, _ in probe.attach)
            statuses.append(ProbeStatus(probe.name, probe.kind, True))

    maps: list[str] = []
    map_fds: list[int] = []
    for name in MAPS_HANDED_OVER:
        try:
            table = bpf[name.encode()]
        except KeyError:
            continue
        maps.append(name)
        map_fds.append(int(table.map_fd))
    manifest = Manifest(
        maps=maps,
        attachments=attached,
        statuses=sorted(statuses),
        syscall_names=_syscall_names(),
    )
    return manifest, map_fds + fds


def serve(sock: socket.socket) -> None:
    """Read the options, compile, send the manifest and the fds."""
    request, _, _, _ = sock.recvmsg(handoff.MAX_PAYLOAD)
    if not request:
        return  # the daemon went away before asking
    try:
        options = msgspec.json.decode(request, type=LoadOptions)
        manifest, fds = compile_and_attach(options)
    except (CaptureError, msgspec.ValidationError, msgspec.DecodeError) as err:
        manifest, fds = Manifest(error=_first_line(err)), []
    handoff.send(sock, msgspec.json.encode(manifest), fds)


def main(argv: Sequence[str]) -> None:
    """``argv``: the socket's fd number. Never returns: ``os._exit``."""
    code = 0
    try:
        with socket.socket(fileno=int(argv[0])) as sock:
            serve(sock)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the daemon says it
        code = 130
    except BaseException as err:  # a bug or a vanished daemon: say so, exit non-zero
        print(f"tracehound compile child: {_first_line(err)}", file=sys.stderr)
        code = 1
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code)  # not sys.exit: bcc's atexit cleanup would detach everything
