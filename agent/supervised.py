"""The daemon's helper processes (the index follower, the fleet publisher):
how one is stopped and how a restart is said.

Each is started again after it dies, after a pause and one line on
stderr, never in a tight loop; at the stop it gets SIGTERM, time to
finish, then SIGKILL.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable

import trio

__all__ = ["restart_pause", "terminator"]


def terminator(grace_s: float) -> Callable[[trio.Process], Awaitable[None]]:
    """A ``deliver_cancel`` for :func:`trio.run_process`: SIGTERM, then
    SIGKILL if the process is still there after ``grace_s``."""

    async def terminate(process: trio.Process) -> None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(grace_s):
            await process.wait()
            return
        process.kill()

    return terminate


async def restart_pause(what: str, status: int | None, meanwhile: str, delay_s: float) -> None:
    """Say that ``what`` exited (and what holds meanwhile), then wait ``delay_s``."""
    print(
        f"tracehound: {what} exited with status {status};"
        f" starting it again in {delay_s:g} s ({meanwhile})",
        file=sys.stderr,
        flush=True,
    )
    await trio.sleep(delay_s)
