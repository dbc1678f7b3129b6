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

import msgspec

from agent.redact import Redactor
from agent.redact.events import (
    CurrentMemo,
    MemoStats,
    TextRedactor,
    comm_is_cut,
    redact_endpoint,
)
from agent.sinks.profile import ExecRecord, FileRecord, NetRecord, ProcessProfile, Profile

__all__ = ["ProfileRedactor", "redact_profile"]


def redact_profile(profile: Profile, redactor: TextRedactor) -> Profile:
    """``profile`` with argv, command lines, names, paths and UNIX addresses
    redacted. Never raises for any text (the redactor fails closed)."""
    replace = msgspec.structs.replace

    def text(value: str, field: str, cut: bool = False) -> str:
        return redactor.redact_text_detail(value, field, cut=cut).text if value else value

    def argv(values: list[str], field: str, cut: list[int]) -> list[str]:
        return list(redactor.redact_argv(values, field, cut=cut).argv) if values else values

    def exec_record(ex: ExecRecord) -> ExecRecord:
        return replace(
            ex,
            filename=text(ex.filename, "filename", ex.filename_cut),
            argv=argv(ex.argv, "argv", ex.args_cut),
        )

    def file_record(f: FileRecord) -> FileRecord:
        return replace(
            f,
            path=text(f.path, "path", f.path_cut),
            target=text(f.target, "path2", f.target_cut),
        )

    def net_record(n: NetRecord) -> NetRecord:
        endpoint = redact_endpoint(redactor, n.endpoint, set())
        return n if endpoint is n.endpoint else replace(n, endpoint=endpoint)

    def process(p: ProcessProfile) -> ProcessProfile:
        return replace(
            p,
            comm=text(p.comm, "comm", comm_is_cut(p.comm)),
            exe=text(p.exe, "exe"),
            argv=argv(p.argv, "argv", p.argv_cut),
            execs=[exec_record(ex) for ex in p.execs],
            files=[file_record(f) for f in p.files],
            failed_files=[file_record(f) for f in p.failed_files],
            network=[net_record(n) for n in p.network],
            failed_network=[net_record(n) for n in p.failed_network],
        )

    return replace(
        profile,
        command=argv(profile.command, "argv", []),
        processes=[process(p) for p in profile.processes],
        redaction="applied",
    )


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
