"""``tracehound report``: what a time range of the log amounts to, like ``aureport``.

Pure aggregation: feed every record a search answered (:meth:`ReportBuilder.add`,
in log order) and take the :class:`Report`. Sections, each a list of
``(what, count)`` sorted by count (highest first) then by what:

- ``programs``: successful execs, by executable (``exe``, else ``filename``);
- ``files_written``: successful file operations that change a file or a
  name, by path (open for writing, creating or truncating; unlink, rmdir,
  rename and link (both names), symlink, mkdir, chmod, chown, truncate);
- ``peers``: connects and sends (their result ok, or in progress), by
  remote endpoint (``10.0.0.1:443``, ``[::1]:53``, ``unix:/run/x.sock``);
- ``failed``: every record whose call returned an error, by short type and
  errno name (``file.open ENOENT``);
- ``privilege``: successful credential changes (``process.credentials``),
  by executable or comm, call, and each id that changed
  (``sudo setresuid euid:1000->0``);
- ``losses``: events the capture lost (``capture.loss``), by kind and
  stage (``exec ringbuf``), summed over the records' counts.

Memory is bounded: each section keeps at most :data:`MAX_KEYS` distinct
keys; records for further keys are counted in the section's ``other``
(never dropped silently). Keys hold host text as the host wrote it (a
name with raw bytes keeps them); :func:`render_text` escapes every key
(:mod:`agent.safetext`), :func:`render_json` writes them in escape form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from agent.capture.kinds import O_ACCMODE, O_CREAT, O_TRUNC
from agent.evidence.record_types import CALL_TYPES, TYPE_EXEC, TYPE_LOSS
from agent.evidence.types import TYPE_PREFIX
from agent.query.compact import errno_name
from agent.query.match import endpoint_text, field_text, int_field, path_text
from agent.safetext import escape_text, json_bytes

__all__ = ["MAX_KEYS", "Report", "ReportBuilder", "Section", "render_json", "render_text"]

#: Distinct keys kept per section; more are counted in ``other``.
MAX_KEYS: Final = 10_000
_EINPROGRESS: Final = -115
_CHANGING_OPS: Final = frozenset(
    {"unlink", "rmdir", "rename", "link", "symlink", "mkdir", "chmod", "chown", "truncate"}
)
_CONTACT_OPS: Final = frozenset({"connect", "sendto", "sendmsg", "sendmmsg"})
_CREDENTIALS: Final = CALL_TYPES["credentials"]
SECTIONS: Final = ("programs", "files_written", "peers", "failed", "privilege", "losses")


class Entry(msgspec.Struct, frozen=True):
    """What was counted, as fields (``["file.open", "ENOENT"]``), and how often."""

    what: list[str]
    count: int


class Section(msgspec.Struct, frozen=True):
    """One section: its entries, and how many records had a key past :data:`MAX_KEYS`."""

    entries: list[Entry]
    other: int


class Report(msgspec.Struct, frozen=True):
    """The report of the records added: how many, their time range (RFC 3339
    as logged; None when there were none), and each section."""

    records: int
    first: str | None
    last: str | None
    programs: Section
    files_written: Section
    peers: Section
    failed: Section
    privilege: Section
    losses: Section


class _Counter:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], int] = {}
        self.other = 0

    def add(self, key: tuple[str, ...], count: int = 1) -> None:
        if key in self.counts:
            self.counts[key] += count
        elif len(self.counts) < MAX_KEYS:
            self.counts[key] = count
        else:
            self.other += count

    def section(self) -> Section:
        ordered = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        return Section(entries=[Entry(list(k), n) for k, n in ordered], other=self.other)


def _short(kind: str) -> str:
    return kind[len(TYPE_PREFIX) :].rsplit(".v", 1)[0] if kind.startswith(TYPE_PREFIX) else kind


class ReportBuilder:
    """Counts records into a :class:`Report` (see the module's docstring)."""

    def __init__(self) -> None:
        self.records = 0
        self.first: str | None = None
        self.last: str | None = None
        self._counters = {name: _Counter() for name in SECTIONS}

    def add(self, event: Mapping[str, Any]) -> None:
        """Count one record (a CloudEvent as logged, decoded)."""
        self.records += 1
        when = event.get("time")
        if isinstance(when, str):
            self.first = when if self.first is None or when < self.first else self.first
            self.last = when if self.last is None or when > self.last else self.last
        kind = str(event.get("type") or "")
        data = event.get("data")
        if not isinstance(data, Mapping):
            return
        short = _short(kind)
        family, _, op = short.partition(".")
        ret = int_field(data, "res") if family == "uring" else int_field(data, "ret")
        if family == "uring":
            op = str(data.get("op") or op)
        count = int_field(data, "count") or 1  # a folded record stands for `count` calls
        failed = ret is not None and ret < 0
        if failed and not (op in _CONTACT_OPS and ret == _EINPROGRESS):
            assert ret is not None
            self._counters["failed"].add((short, errno_name(ret)), count)
        if kind == TYPE_EXEC and ret == 0:
            exe = path_text(data, "exe", "filename")
            if exe:
                self._counters["programs"].add((exe,))
        elif family in ("file", "uring") and not failed:
            self._file(str(data.get("op") or op), data, count)
        if (
            family in ("network", "uring")
            and op in _CONTACT_OPS
            and (not failed or ret == _EINPROGRESS)
        ):
            peer = endpoint_text(data)
            if peer is not None:
                self._counters["peers"].add((peer,), count)
        if kind == _CREDENTIALS and not failed:
            self._privilege(data)
        if kind == TYPE_LOSS:
            self._losses(data)

    def _file(self, op: str, data: Mapping[str, Any], count: int) -> None:
        written = op in _CHANGING_OPS
        if op in ("open", "openat", "openat2"):
            flags = int_field(data, "flags") or int_field(data, "op_flags") or 0
            written = bool(flags & O_ACCMODE) or bool(flags & (O_CREAT | O_TRUNC))
        if not written:
            return
        for absolute, given in (("abs_path", "path"), ("abs_path2", "path2")):
            path = path_text(data, absolute, given)
            if path:
                self._counters["files_written"].add((path,), count)

    def _privilege(self, data: Mapping[str, Any]) -> None:
        before, after = data.get("ids_before"), data.get("ids_after")
        if not isinstance(before, Mapping) or not isinstance(after, Mapping):
            return
        changed = [
            f"{name}:{before.get(name)}->{value}"
            for name, value in sorted(after.items())
            if before.get(name) != value
        ]
        if not changed:
            return
        who = field_text(data, "comm") or "?"
        call = field_text(data, "syscall") or "?"
        self._counters["privilege"].add((who, call, *changed))

    def _losses(self, data: Mapping[str, Any]) -> None:
        counts = data.get("counts")
        if not isinstance(counts, Mapping):
            return
        for kind, stages in sorted(counts.items()):
            if isinstance(stages, Mapping):
                for stage, lost in sorted(stages.items()):
                    if isinstance(lost, int) and lost > 0:
                        self._counters["losses"].add((str(kind), str(stage)), lost)

    def report(self) -> Report:
        sections = {name: counter.section() for name, counter in self._counters.items()}
        return Report(records=self.records, first=self.first, last=self.last, **sections)


_TITLES: Final = {
    "programs": "Programs run",
    "files_written": "Files written",
    "peers": "Peers contacted",
    "failed": "Failed operations",
    "privilege": "Privilege changes",
    "losses": "Events lost by the capture",
}


def render_text(report: Report, *, top: int = 20) -> str:
    """The report for a person: each section's ``top`` entries (and how many
    more), every key escaped (one field, one token: no forged lines)."""
    lines = [
        f"Records: {report.records}",
        f"From: {escape_text(report.first) if report.first else '-'}",
        f"To:   {escape_text(report.last) if report.last else '-'}",
    ]
    for name in SECTIONS:
        section: Section = getattr(report, name)
        total = sum(e.count for e in section.entries) + section.other
        lines.append("")
        lines.append(f"{_TITLES[name]}: {total}")
        for entry in section.entries[:top]:
            words = " ".join(escape_text(word) for word in entry.what)
            lines.append(f"  {entry.count:>8}  {words}")
        hidden = len(section.entries) - top
        if hidden > 0:
            lines.append(f"  ... {hidden} more (--format json lists them all)")
        if section.other:
            lines.append(f"  {section.other:>8}  (others, past {MAX_KEYS} distinct)")
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> bytes:
    """The report as one JSON document (host text in escape form), newline-ended."""
    return json_bytes(report, msgspec.json.encode, msgspec.to_builtins) + b"\n"
