"""The daemon's side of the fleet publisher: start it, read its status, restart it.

The publisher (:mod:`agent.fleet.publisher`) is a process of its own that
runs asyncio and nats-py; the trio daemon embeds no NATS code. This task
keeps one running while the daemon's helpers live, reads the one JSON
status line a second it writes on its stdout (:mod:`agent.fleet.status`)
into :class:`~agent.fleet.status.FleetTotals`, which ``/metrics`` shows,
and passes its stderr lines on (they are inherited: one line each).

A publisher that exits is started again after :data:`RESTART_DELAY_S`,
with one line on stderr, never in a tight loop: the log keeps what it has
not published. At the daemon's stop it gets SIGTERM (it saves its cursor)
and is killed after :data:`STOP_GRACE_S`. A status line that is not one
(too long, not JSON) is counted and skipped, never trusted.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Final

import trio

from agent.fleet.status import MAX_LINE, FleetTotals, decode_status
from agent.supervised import restart_pause, terminator

__all__ = ["RESTART_DELAY_S", "STOP_GRACE_S", "keep_publishing", "publisher_command"]

RESTART_DELAY_S: Final = 5.0
STOP_GRACE_S: Final = 5.0


def publisher_command(config_path: Path, state_dir: Path) -> list[str]:
    """The publisher's command line as the daemon runs it."""
    return [
        sys.executable, "-m", "agent.fleet.publisher",
        "--config", str(config_path), "--state-dir", str(state_dir),
        "--status", "--parent", str(os.getpid()),
    ]  # fmt: skip


async def _read_status(stream: trio.abc.ReceiveStream, totals: FleetTotals) -> None:
    """Each complete line into ``totals``; a line longer than :data:`MAX_LINE`
    is skipped to its end (counted), so memory stays bounded."""
    pending = b""
    skipping = False
    async for chunk in stream:
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            line, pending = pending[:end], pending[end + 1 :]
            if skipping:
                skipping = False
                continue
            status = decode_status(line)
            if status is None:
                totals.bad_status += 1
            else:
                totals.update(status)
        if len(pending) > MAX_LINE:
            if not skipping:
                totals.bad_status += 1
            pending, skipping = b"", True


async def keep_publishing(config_path: Path, state_dir: Path, totals: FleetTotals) -> None:
    """Run the publisher of ``state_dir``'s log with ``config_path``'s ``[fleet]`` until cancelled."""
    command = publisher_command(config_path, state_dir)
    while True:
        totals.starts += 1
        totals.running = True
        async with trio.open_nursery() as nursery:
            run = functools.partial(
                trio.run_process,
                command,
                stdout=subprocess.PIPE,
                check=False,
                deliver_cancel=terminator(STOP_GRACE_S),
            )
            process: trio.Process = await nursery.start(run)
            assert process.stdout is not None
            await _read_status(process.stdout, totals)
        totals.process_ended()
        await restart_pause(
            "fleet: the publisher",
            process.returncode,
            "the log keeps what is unpublished",
            RESTART_DELAY_S,
        )
