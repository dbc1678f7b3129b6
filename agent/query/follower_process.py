"""The daemon's side of the index follower: start it, restart it, stop it.

The follower (:mod:`agent.query.follower`) is a process of its own; this
task keeps one running for as long as the daemon's helpers live. A
follower that dies is started again after :data:`RESTART_DELAY_S` (with
one line on stderr), never in a tight loop; while none runs, queries
find the index behind and scan. At the stop it gets SIGTERM, indexes
what is left, and is killed if that takes more than :data:`STOP_GRACE_S`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

import trio

from agent.supervised import restart_pause, terminator

__all__ = ["RESTART_DELAY_S", "STOP_GRACE_S", "keep_index"]

RESTART_DELAY_S: Final = 5.0
STOP_GRACE_S: Final = 10.0


async def keep_index(state_dir: Path) -> None:
    """Run the follower on ``state_dir`` until cancelled."""
    command = [sys.executable, "-m", "agent.query.follower", str(state_dir)]
    while True:
        result = await trio.run_process(
            command, check=False, deliver_cancel=terminator(STOP_GRACE_S)
        )
        await restart_pause(
            "index: the follower", result.returncode, "queries scan meanwhile", RESTART_DELAY_S
        )
