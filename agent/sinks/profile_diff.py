"""Drift between two profiles: what a run did that another did not. Pure.

``tracehound profile diff A B`` compares a baseline A with a new run B. Every
fact is keyed by the *program* that did it (the executable a process ran at
the time: a fork runs its parent's until it execs), so "which program did
what" is part of each answer:

- programs: run in B only (added), in A only (removed), or run by other
  programs than before (changed), with the programs that ran them and how
  their processes ended;
- exits: a program's set of outcomes (``exit 0``, ``SIGSEGV``) changed;
- files: keyed by program, operation, path (and a rename's or link's
  target); the value is the access mode (read, write, create...) and the
  results (``ok`` or the errno), so a file read before and written now is a
  *changed* fact (``read -> read,write``), as is one that now fails; failed
  exec attempts are file facts with op ``exec``;
- network: keyed by program, operation and endpoint, the results as value.

Noise is left out so that drift means behaviour: temporary names are made
the same (:mod:`agent.sinks.profile_names`), and so are addresses a run
cannot choose (an accepted connection's client port, the port of a bind to
port 0). ``ignore`` globs (``fnmatch.fnmatchcase``: ``*`` matches across
``/``, as ``tracehound events --path`` does) drop every fact whose path,
target or unix socket path matches, as captured or as normalised; one that
matches a program's executable drops that program and all it did.

What can go wrong: a merged file record counts as done by the program its
process ran when it was *first* seen; the same operation repeated after an
exec is then not told apart. Items are display text (paths escaped as
``ls -b`` does, agent.safetext), so a drift line cannot be forged by a name.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Literal, TypeAlias

import msgspec

from agent.capture.events import Endpoint
from agent.safetext import escape_text, text_field
from agent.sinks.profile import (
    NetRecord,
    ProcessProfile,
    Profile,
    endpoint_text,
    exit_outcome,
    parent_indexes,
)
from agent.sinks.profile_names import normalize_path

__all__ = [
    "Drift",
    "ExitChange",
    "FileChange",
    "NetChange",
    "ProgramChange",
    "diff",
    "render_drift",
]

Change: TypeAlias = Literal["added", "removed", "changed"]
#: The name of a program not seen exec'd (the root of a profile made
#: without its exec): never guessed.
UNKNOWN_PROGRAM = "?"


class ProgramChange(msgspec.Struct, frozen=True):
    """A program run in one profile only, or by other programs than before.
    ``run_by``: the programs that exec'd it (``?``: not in the profile);
    ``exits``: how its processes ended; each None on the side it is absent."""

    program: str
    change: Change
    run_by_before: list[str] | None
    run_by_after: list[str] | None
    exits_before: list[str] | None
    exits_after: list[str] | None


class ExitChange(msgspec.Struct, frozen=True):
    """A program in both profiles whose processes ended otherwise."""

    program: str
    before: list[str]
    after: list[str]


class FileUse(msgspec.Struct, frozen=True):
    """How a program used one path: open's access words (sorted, merged)
    and the results (``ok`` or errno names, sorted)."""

    access: list[str]
    results: list[str]


class FileChange(msgspec.Struct, frozen=True):
    """One (program, op, path, target) fact that differs; ``before`` is None
    when added, ``after`` when removed."""

    program: str
    op: str
    path: str
    target: str
    change: Change
    before: FileUse | None
    after: FileUse | None


class NetChange(msgspec.Struct, frozen=True):
    """One (program, op, endpoint) fact that differs: its results."""

    program: str
    op: str
    endpoint: str
    change: Change
    before: list[str] | None
    after: list[str] | None


class Drift(msgspec.Struct, frozen=True):
    """What B did otherwise than A; each list sorted by its key."""

    programs: list[ProgramChange]
    exits: list[ExitChange]
    files: list[FileChange]
    network: list[NetChange]

    @property
    def any(self) -> bool:
        return bool(self.programs or self.exits or self.files or self.network)


FileKey: TypeAlias = tuple[str, str, str, str]
NetKey: TypeAlias = tuple[str, str, str]


class _Facts:
    """What one profile did, keyed for comparison."""

    def __init__(self) -> None:
        self.run_by: dict[str, set[str]] = defaultdict(set)
        self.exits: dict[str, set[str]] = defaultdict(set)
        self.access: dict[FileKey, set[str]] = defaultdict(set)
        self.file_results: dict[FileKey, set[str]] = defaultdict(set)
        self.net: dict[NetKey, set[str]] = defaultdict(set)


class _Ignore:
    def __init__(self, globs: Sequence[str]) -> None:
        self.globs = tuple(globs)

    def __call__(self, *paths: str) -> bool:
        """Whether any of ``paths`` (raw; "" skipped) matches a glob, as
        captured or normalised."""
        for path in paths:
            if path:
                for glob in self.globs:
                    if fnmatchcase(path, glob) or fnmatchcase(normalize_path(path), glob):
                        return True
        return False


def _shown(path: str, cut: bool = False) -> str:
    return text_field(normalize_path(path), cut=cut) if path else ""


def _timelines(processes: Sequence[ProcessProfile]) -> list[tuple[list[int], list[str]]]:
    """Per process: the times from which it ran each program (raw paths),
    in order; the first from the start, inherited from its parent."""
    out: list[tuple[list[int], list[str]]] = []
    for index, parent in enumerate(parent_indexes(processes)):
        proc = processes[index]
        ok = [ex for ex in proc.execs if not ex.error]
        if parent is not None:
            first = _program_at(out[parent], proc.started_ns or 0)
        elif not ok:
            first = proc.exe_path or proc.exe or UNKNOWN_PROGRAM
        else:
            first = UNKNOWN_PROGRAM
        times, names = [-1], [first]
        for ex in sorted(ok, key=lambda e: e.ts_ns):
            times.append(ex.ts_ns)
            names.append(ex.exe_path or ex.filename)
        out.append((times, names))
    return out


def _program_at(timeline: tuple[list[int], list[str]], ts_ns: int) -> str:
    times, names = timeline
    return names[max(bisect.bisect_right(times, ts_ns) - 1, 0)]


def _endpoint_key(record: NetRecord) -> tuple[str, str] | None:
    """(the endpoint as shown, its unix path if any)."""
    ep: Endpoint | None = record.endpoint
    if ep is None:
        return None
    unix = ep.address if ep.family == "unix" else ""
    if ep.family == "unix":
        return f"unix:{escape_text(normalize_path(ep.address))}", unix
    if record.op == "accept" or (record.op == "bind" and ep.port == 0):
        # The port is not the program's choice.
        return f"{ep.family}:{escape_text(ep.address)}", unix
    return endpoint_text(ep), unix


def _facts(profile: Profile, ignore: Sequence[str] = ()) -> _Facts:
    """What ``profile`` did, normalised and keyed, ``ignore`` left out."""
    ignored = _Ignore(ignore)
    out = _Facts()
    processes = profile.processes
    for proc, timeline in zip(processes, _timelines(processes), strict=True):
        times, names = timeline

        def program(ts_ns: int, timeline: tuple[list[int], list[str]] = timeline) -> str | None:
            raw = _program_at(timeline, ts_ns)
            return None if ignored(raw) else _shown(raw)

        for i in range(1, len(names)):  # each exec: who ran what
            ran, by = names[i], names[i - 1]
            if not ignored(ran):
                out.run_by[_shown(ran)].add(UNKNOWN_PROGRAM if ignored(by) else _shown(by))
        outcome = exit_outcome(proc)
        last = program(times[-1])
        if last is not None and outcome is not None:
            out.exits[last].add(outcome)
        for ex in proc.execs:
            who = program(ex.ts_ns - 1)
            if ex.error and who is not None and not ignored(ex.filename):
                key = (who, "exec", _shown(ex.filename, ex.filename_cut), "")
                out.access.setdefault(key, set())  # present, with no access words
                out.file_results[key].add(ex.error)
        for f in [*proc.files, *proc.failed_files]:
            who = program(f.first_ns)
            if who is None or ignored(f.path, f.target):
                continue
            key = (who, f.op, _shown(f.path, f.path_cut), _shown(f.target, f.target_cut))
            out.access[key].update(f.access)
            out.file_results[key].add(f.error or "ok")
        for n in [*proc.network, *proc.failed_network]:
            who = program(n.first_ns)
            shown = _endpoint_key(n)
            if who is None or shown is None or ignored(shown[1]):
                continue
            out.net[(who, n.op, shown[0])].add(n.error or "ok")
    return out


def _sorted(values: set[str] | None) -> list[str] | None:
    return None if values is None else sorted(values)


def diff(a: Profile, b: Profile, *, ignore: Sequence[str] = ()) -> Drift:
    """What B did otherwise than A (see the module's rules)."""
    fa, fb = _facts(a, ignore), _facts(b, ignore)
    programs = [
        ProgramChange(
            program=name,
            change=change,
            run_by_before=_sorted(fa.run_by.get(name)),
            run_by_after=_sorted(fb.run_by.get(name)),
            exits_before=_sorted(fa.exits.get(name)) if name in fa.run_by else None,
            exits_after=_sorted(fb.exits.get(name)) if name in fb.run_by else None,
        )
        for name, change in _str_changes(fa.run_by, fb.run_by)
    ]
    exits = [
        ExitChange(name, sorted(fa.exits[name]), sorted(fb.exits[name]))
        for name in sorted(fa.exits.keys() & fb.exits.keys())
        if fa.exits[name] != fb.exits[name]
    ]
    files: list[FileChange] = []
    for key in sorted({*fa.access, *fb.access}):
        use_a = (
            FileUse(sorted(fa.access[key]), sorted(fa.file_results[key]))
            if key in fa.access
            else None
        )
        use_b = (
            FileUse(sorted(fb.access[key]), sorted(fb.file_results[key]))
            if key in fb.access
            else None
        )
        if use_a != use_b:
            change: Change = "added" if use_a is None else "removed" if use_b is None else "changed"
            files.append(FileChange(*key, change=change, before=use_a, after=use_b))
    network: list[NetChange] = []
    for nkey in sorted({*fa.net, *fb.net}):
        res_a, res_b = _sorted(fa.net.get(nkey)), _sorted(fb.net.get(nkey))
        if res_a != res_b:
            change = "added" if res_a is None else "removed" if res_b is None else "changed"
            network.append(NetChange(*nkey, change=change, before=res_a, after=res_b))
    return Drift(programs=programs, exits=exits, files=files, network=network)


def _str_changes(
    before: dict[str, set[str]], after: dict[str, set[str]]
) -> list[tuple[str, Change]]:
    out: list[tuple[str, Change]] = []
    for key in sorted({*before, *after}):
        if key not in after:
            out.append((key, "removed"))
        elif key not in before:
            out.append((key, "added"))
        elif before[key] != after[key]:
            out.append((key, "changed"))
    return out


_MARK = {"added": "+", "removed": "-", "changed": "~"}


def _words(values: list[str] | None) -> str:
    return ",".join(values) if values else "-"


def _use(use: FileUse) -> str:
    access = f"({','.join(use.access)})" if use.access else ""
    results = "" if use.results == ["ok"] else f" [{','.join(use.results)}]"
    return access + results


def render_drift(drift: Drift) -> str:
    """One line per change, ``+`` added, ``-`` removed, ``~`` changed (with
    ``before -> after``), then a count; ``no drift`` when there is none."""
    lines: list[str] = []
    for p in drift.programs:
        if p.change == "changed":
            lines.append(
                f"~ program {p.program}: run by {_words(p.run_by_before)}"
                f" -> {_words(p.run_by_after)}"
            )
        else:
            run_by = p.run_by_after if p.change == "added" else p.run_by_before
            exits = p.exits_after if p.change == "added" else p.exits_before
            lines.append(
                f"{_MARK[p.change]} program {p.program} (run by {_words(run_by)}; {_words(exits)})"
            )
    for e in drift.exits:
        lines.append(f"~ exit {e.program}: {_words(e.before)} -> {_words(e.after)}")
    for f in drift.files:
        target = f" -> {f.target}" if f.target else ""
        where = f"{f.path}{target}"
        if f.before is not None and f.after is not None:
            lines.append(
                f"~ file {f.program}: {f.op} {where}: {_use(f.before) or '(ok)'}"
                f" -> {_use(f.after) or '(ok)'}"
            )
        else:
            use = f.after if f.after is not None else f.before
            assert use is not None
            lines.append(f"{_MARK[f.change]} file {f.program}: {f.op}{_use(use)} {where}")
    for n in drift.network:
        if n.change == "changed":
            lines.append(
                f"~ net {n.program}: {n.op} {n.endpoint}: {_words(n.before)} -> {_words(n.after)}"
            )
        else:
            results = n.after if n.after is not None else n.before
            noted = "" if results == ["ok"] else f" [{_words(results)}]"
            lines.append(f"{_MARK[n.change]} net {n.program}: {n.op} {n.endpoint}{noted}")
    if not lines:
        return "no drift\n"
    return "\n".join(lines) + f"\ndrift: {len(lines)} change{'' if len(lines) == 1 else 's'}\n"
