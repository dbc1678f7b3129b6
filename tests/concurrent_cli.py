"""Run several real CLI processes at once and collect each one's result.

A test about a real command's exit status and stderr line needs a real
process per case, but not one after another: most of each one's time is
Python starting up, which two cores can do twice at once. Each process is
still its own ``subprocess.run`` (its own timeout, its own elapsed time
measured around it alone), so a case that hangs or is slow fails as it
would have run alone; only the waiting overlaps.

What can go wrong: with more workers than cores, each process is slower
(its elapsed time includes waiting for a core), so a test that bounds a
process's time must keep its bound well above a lone run's; ``workers``
stays small for that reason.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finished:
    """One command's result and how long it took from its own start."""

    result: subprocess.CompletedProcess[str]
    seconds: float


def run_all(
    commands: Sequence[Sequence[str]],
    *,
    timeout: float = 60,
    workers: int = 4,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> list[Finished]:
    """Run every command (text output captured), at most ``workers`` at a
    time; the results in the order of ``commands``.

    Raises:
        subprocess.TimeoutExpired: a command ran past ``timeout`` (it is
            killed, as ``subprocess.run`` does).
    """

    def one(command: Sequence[str]) -> Finished:
        start = time.monotonic()
        result = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
        )
        return Finished(result, time.monotonic() - start)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, commands))
