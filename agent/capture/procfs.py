"""What /proc says about processes: start-up seeding and a bounded cache.

Events say what happened from capture start on; a process that was already
running is seeded from /proc once, marked ``preexisting``; and
:func:`gone_processes` tells which processes held as running no longer
exist (their exit record was lost). Lookups go
through :class:`ProcessInfoCache`, an LRU with a fixed capacity whose hits,
misses and evictions are counted. This is I/O: it never runs in the drain.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable

import psutil

from agent.capture.events import ProcessSeen


class ProcessInfoCache:
    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"process cache capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[int, ProcessSeen] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, pid: int, *, preexisting: bool = False) -> ProcessSeen | None:
        """The process ``pid`` as /proc describes it, or None if it is gone."""
        entry = self._entries.get(pid)
        if entry is not None:
            self._entries.move_to_end(pid)
            self.hits += 1
            return entry
        self.misses += 1
        entry = read_process(pid, preexisting=preexisting)
        if entry is None:
            return None
        self._entries[pid] = entry
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evictions += 1
        return entry


def read_process(pid: int, *, preexisting: bool) -> ProcessSeen | None:
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            uid = proc.uids().real
            try:
                exe = proc.exe()
            except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
                exe = ""
            try:
                user = proc.username()
            except (KeyError, psutil.Error):
                user = str(uid)
            return ProcessSeen(
                pid=pid,
                ppid=proc.ppid(),
                comm=proc.name(),
                exe=exe,
                cmdline=tuple(proc.cmdline()),
                uid=uid,
                user=user,
                start_time=proc.create_time(),
                preexisting=preexisting,
            )
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, ProcessLookupError):
        return None


def seed_processes(cache: ProcessInfoCache, *, exclude: int = os.getpid()) -> list[ProcessSeen]:
    """Every process running now, marked preexisting, oldest first."""
    seen = []
    for pid in psutil.pids():
        if pid == exclude:
            continue
        entry = cache.lookup(pid, preexisting=True)
        if entry is not None:
            seen.append(entry)
    seen.sort(key=lambda p: (p.start_time, p.pid))
    return seen


#: A process's start in /proc and its fork record's time differ by far less
#: (both are CLOCK_BOOTTIME; /proc counts in clock ticks); more means the
#: pid now belongs to another process.
START_TOLERANCE_NS = 1_000_000_000
_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def started_ns(pid: int) -> int | None:
    """When ``pid`` started (CLOCK_BOOTTIME ns, clock-tick resolution), from
    /proc/PID/stat; None if there is no such process (or task) now."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    fields = stat.rpartition(b")")[2].split()
    try:
        return int(fields[19]) * _TICK_NS  # field 22, starttime
    except (IndexError, ValueError):
        return None


def gone_processes(
    running: Iterable[tuple[int, int | None]], *, tolerance_ns: int = START_TOLERANCE_NS
) -> list[tuple[int, int | None]]:
    """Which of ``running`` (``(pid, started_ns)``; None when the start is
    unknown, as for a seeded process) no longer exist: no /proc entry, or
    one whose start is not theirs (the pid was reused). I/O: /proc reads."""
    gone = []
    for pid, started in running:
        now = started_ns(pid)
        if now is None or (started is not None and abs(now - started) > tolerance_ns):
            gone.append((pid, started))
    return gone
