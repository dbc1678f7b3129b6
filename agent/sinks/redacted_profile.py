"""The profile as it may leave the agent: every free-text field redacted.

The aggregating sink folds raw events (redacting there would put regex work
on the drain's path); whatever shows a profile (``profile`` JSON and text,
``/v1/snapshot``, ``snapshot``, ``run --profile-file``) passes it through
:func:`redact_profile` first, with the same rules, fields and field names as
every other output (:mod:`agent.redact.events`). A :class:`RedactionMemo`
in front of the redactor makes a second snapshot of the same host cheap:
paths and names repeat.

Raw output exists only as ``tracehound profile --no-redact``, which skips
this step and marks the profile ``redaction = "off"``; the API never does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

from agent.redact import Redactor
from agent.redact.events import (
    CurrentMemo,
    MemoStats,
    TextRedactor,
    comm_is_cut,
    redact_endpoint,
)
from agent.sinks.profile import (
    CallRecord,
    ExecRecord,
    FileRecord,
    NetRecord,
    ProcessProfile,
    Profile,
)

__all__ = ["ProfileRedactor", "redact_profile"]


def redact_profile(profile: Profile, redactor: TextRedactor) -> Profile:
    """``profile`` with argv, command lines, names, paths, cgroup paths, UNIX
    addresses and the strings of calls (mount sources, module params...)
    redacted. Never raises for any text (the redactor fails closed).

    A record nothing was redacted in is kept as it is, not copied: a
    snapshot of a busy host is tens of thousands of records, nearly all
    unchanged, and copies of them are what a snapshot's memory peak is made of.
    """
    replace = msgspec.structs.replace

    def text(value: str, field: str, cut: bool = False) -> str:
        if not value:
            return value
        redacted = redactor.redact_text_detail(value, field, cut=cut).text
        return value if redacted == value else redacted

    def argv(values: list[str], field: str, cut: list[int]) -> list[str]:
        if not values:
            return values
        redacted = redactor.redact_argv(values, field, cut=cut).argv
        return values if list(redacted) == values else list(redacted)

    def exec_record(ex: ExecRecord) -> ExecRecord:
        filename = text(ex.filename, "filename", ex.filename_cut)
        args = argv(ex.argv, "argv", ex.args_cut)
        cwd = text(ex.cwd, "cwd", "cut" in ex.cwd_flags)
        exe_path = text(ex.exe_path, "exe", "cut" in ex.exe_path_flags)
        if cwd is not ex.cwd or exe_path is not ex.exe_path:
            ex = replace(ex, cwd=cwd, exe_path=exe_path)
        if filename is ex.filename and args is ex.argv:
            return ex
        return replace(ex, filename=filename, argv=args)

    def file_record(f: FileRecord) -> FileRecord:
        path = text(f.path, "path", f.path_cut)
        target = text(f.target, "path2", f.target_cut)
        passed = text(f.passed, "path")
        target_passed = text(f.target_passed, "path2")
        new = (path, target, passed, target_passed)
        if all(
            a is b for a, b in zip(new, (f.path, f.target, f.passed, f.target_passed), strict=True)
        ):
            return f  # nothing redacted: no copy
        return replace(f, path=path, target=target, passed=passed, target_passed=target_passed)

    def net_record(n: NetRecord) -> NetRecord:
        endpoint = redact_endpoint(redactor, n.endpoint, set())
        return n if endpoint is n.endpoint else replace(n, endpoint=endpoint)

    def call_record(c: CallRecord) -> CallRecord:
        redacted = {k: text(v, k, k in c.text_cut) for k, v in c.text.items()}
        if all(redacted[k] is v for k, v in c.text.items()):
            return c
        return replace(c, text=redacted)

    def each(items: list[_R], redact: Callable[[_R], _R]) -> list[_R]:
        out = [redact(item) for item in items]
        return items if all(a is b for a, b in zip(out, items, strict=True)) else out

    def process(p: ProcessProfile) -> ProcessProfile:
        changed = {
            "comm": text(p.comm, "comm", comm_is_cut(p.comm)),
            "exe": text(p.exe, "exe"),
            "exe_path": text(p.exe_path, "exe"),
            "cwd": text(p.cwd, "cwd"),
            "argv": argv(p.argv, "argv", p.argv_cut),
            "cgroup": text(p.cgroup, "cgroup") if p.cgroup else p.cgroup,
            "execs": each(p.execs, exec_record),
            "files": each(p.files, file_record),
            "failed_files": each(p.failed_files, file_record),
            "network": each(p.network, net_record),
            "failed_network": each(p.failed_network, net_record),
            "calls": each(p.calls, call_record),
        }
        changed = {k: v for k, v in changed.items() if v is not getattr(p, k)}
        return replace(p, **changed) if changed else p

    return replace(
        profile,
        command=argv(profile.command, "argv", []),
        processes=each(profile.processes, process),
        redaction="applied",
    )


_R = TypeVar("_R")


class ProfileRedactor:
    """Redacts profiles with the current rules, through a memo kept between
    calls (a second snapshot of the same host costs little).

    ``rules`` returns the redactor whose rules apply now (a reload may change
    it); the memo works on a copy of it, so its counters are never touched
    by another thread. Not thread-safe itself: callers serialise (the API
    takes a lock around its worker-thread call).
    """

    def __init__(self, rules: Callable[[], Redactor]) -> None:
        self._memo = CurrentMemo(rules)

    def memo_stats(self) -> MemoStats | None:
        """The redaction memo's size and counters (None before the first use)."""
        memo = self._memo.memo
        return None if memo is None else memo.stats()

    def __call__(self, profile: Profile) -> Profile:
        return redact_profile(profile, self._memo.get())
