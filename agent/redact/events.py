"""Redacting whole capture events and profiles: which fields, under which names.

This is the one place that says which fields of a native event are free text
from the host and go through the redactor, and under which field names the
redactor counts them: every output (the evidence mapper, ``--events``, the
profile, the snapshot) calls :func:`redact_event` or :func:`redact_profile`
instead of choosing fields itself, so no output can forget one.

Redacted fields: ``comm``; an exec's ``filename`` and ``argv``; a file
event's ``path`` and ``path2``; a socket address that is not an IP address
(a UNIX path, an abstract name); a /proc record's ``comm``, ``exe`` and
``cmdline``. Text the capture cut short is redacted as cut (a token prefix
running to the cut is a secret whose rest was lost): argv entries listed in
``args_cut``, paths flagged cut, and a ``comm`` that fills the kernel's
15 bytes. IP addresses, ports and syscall names are not redacted.

Both functions are pure given the redactor (whose counters move), and never
raise for any text: the redactor fails closed field by field.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import Final, Protocol

import blake3
import msgspec

from agent.capture.events import (
    Endpoint,
    Event,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    ProcessSeen,
)
from agent.redact.engine import RedactedArgv, RedactedText, Redactor

__all__ = [
    "COMM_CUT_BYTES",
    "MEMO_CAPACITY",
    "CurrentMemo",
    "RedactionMemo",
    "TextRedactor",
    "comm_is_cut",
    "redact_endpoint",
    "redact_event",
    "rules_summary",
    "same_rules",
]

COMM_CUT_BYTES: Final = 15
"""The kernel keeps at most 15 bytes of a task's name (TASK_COMM_LEN - 1)."""

MEMO_CAPACITY: Final = 16384
"""Results a :class:`RedactionMemo` keeps; the oldest go first, counted."""


class TextRedactor(Protocol):
    """What redacting an event needs: :class:`~agent.redact.Redactor` or a
    :class:`RedactionMemo` in front of one."""

    def redact_text_detail(self, value: str, field: str, *, cut: bool = False) -> RedactedText: ...

    def redact_argv(
        self, argv: Sequence[str], field: str = "argv", *, cut: Collection[int] = ()
    ) -> RedactedArgv: ...


def same_rules(redactor: Redactor) -> Redactor:
    """A redactor with ``redactor``'s compiled rules and counters of its own:
    for an output that must not move the evidence mapper's counters (which
    go into ``capture.stop``), or that runs in another thread."""
    return Redactor(redactor.rules, max_field_chars=redactor.max_field_chars)


def comm_is_cut(comm: str) -> bool:
    """Does ``comm`` fill the kernel's 15 bytes (so the name may go on)?"""
    if len(comm) < COMM_CUT_BYTES and comm.isascii():
        return False
    return len(comm.encode("utf-8", "surrogateescape")) >= COMM_CUT_BYTES


def redact_endpoint(
    redactor: TextRedactor, endpoint: Endpoint | None, fired: set[str]
) -> Endpoint | None:
    """A socket address with its free text (not an IP address) redacted."""
    if endpoint is None or endpoint.family in ("ipv4", "ipv6"):
        return endpoint
    result = redactor.redact_text_detail(endpoint.address, "address")
    fired.update(result.fired)
    if result.text == endpoint.address:
        return endpoint
    return Endpoint(endpoint.family, result.text, endpoint.port)


def redact_event(redactor: TextRedactor, event: Event) -> tuple[Event, tuple[str, ...]]:
    """``event`` with every free-text field redacted, and the rules that
    changed something (sorted; ``"error"`` for a field that failed)."""
    fired: set[str] = set()

    def text(value: str, field: str, cut: bool = False) -> str:
        if not value:
            return value
        result = redactor.redact_text_detail(value, field, cut=cut)
        fired.update(result.fired)
        return result.text

    replace = msgspec.structs.replace
    redacted: Event
    if isinstance(event, FileEvent):
        redacted = replace(
            event,
            comm=text(event.comm, "comm", comm_is_cut(event.comm)),
            path=text(event.path, "path", event.path_cut),
            path2=text(event.path2, "path2", event.path2_cut),
        )
    elif isinstance(event, ExecEvent):
        argv = redactor.redact_argv(event.argv, "argv", cut=event.args_cut)
        fired.update(argv.fired)
        redacted = replace(
            event,
            comm=text(event.comm, "comm", comm_is_cut(event.comm)),
            filename=text(event.filename, "filename", event.filename_cut),
            argv=argv.argv,
        )
    elif isinstance(event, NetEvent):
        redacted = replace(
            event,
            comm=text(event.comm, "comm", comm_is_cut(event.comm)),
            endpoint=redact_endpoint(redactor, event.endpoint, fired),
        )
    elif isinstance(event, ForkEvent | ExitEvent):
        redacted = replace(event, comm=text(event.comm, "comm", comm_is_cut(event.comm)))
    elif isinstance(event, ProcessSeen):
        cmdline = redactor.redact_argv(event.cmdline, "cmdline")
        fired.update(cmdline.fired)
        redacted = replace(
            event,
            comm=text(event.comm, "comm", comm_is_cut(event.comm)),
            exe=text(event.exe, "exe"),
            cmdline=cmdline.argv,
        )
    else:  # syscall counts: names and numbers only
        redacted = event
    return redacted, tuple(sorted(fired))


class RedactionMemo:
    """A bounded memo in front of a redactor, for outputs that see the same
    text again and again (library paths, comm names, a snapshot taken twice).

    Results are what the redactor returned for the same ``(field, value,
    cut)``, so they are the same text; only the redactor's counters see each
    distinct value once. Holds at most ``capacity`` results (the oldest are
    evicted first, counted in :attr:`evictions`). Not thread-safe, like the
    redactor.
    """

    def __init__(self, redactor: TextRedactor, capacity: int = MEMO_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"memo capacity must be at least 1, got {capacity}")
        self.redactor = redactor
        self.capacity = capacity
        self._texts: OrderedDict[tuple[str, str, bool], RedactedText] = OrderedDict()
        self._argvs: OrderedDict[tuple[str, tuple[str, ...], tuple[int, ...]], RedactedArgv] = (
            OrderedDict()
        )
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._texts) + len(self._argvs)

    def redact_text_detail(self, value: str, field: str, *, cut: bool = False) -> RedactedText:
        key = (field, value, cut)
        found = self._texts.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        result = self.redactor.redact_text_detail(value, field, cut=cut)
        self._texts[key] = result
        self._trim()
        return result

    def redact_argv(
        self, argv: Sequence[str], field: str = "argv", *, cut: Collection[int] = ()
    ) -> RedactedArgv:
        key = (field, tuple(argv), tuple(sorted(cut)))
        found = self._argvs.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        result = self.redactor.redact_argv(argv, field, cut=cut)
        self._argvs[key] = result
        self._trim()
        return result

    def _trim(self) -> None:
        while len(self._texts) + len(self._argvs) > self.capacity:
            table = self._texts if len(self._texts) >= len(self._argvs) else self._argvs
            table.popitem(last=False)
            self.evictions += 1


def rules_summary(redactor: Redactor) -> dict[str, object]:
    """Which rules a redactor runs, for ``capture.start``/``capture.config``
    evidence, without a single pattern: the built-in set as a count and one
    blake3 over its digests (it changes only with the tracehound version),
    every other rule as its :class:`~agent.redact.RuleDigest`."""
    digests = redactor.describe()
    builtin = [d for d in digests if d.builtin]
    joined = b"".join(msgspec.json.encode(d) for d in builtin)
    return {
        "builtin": {"count": len(builtin), "blake3": blake3.blake3(joined).hexdigest()},
        "configured": [msgspec.to_builtins(d) for d in digests if not d.builtin],
    }


class CurrentMemo:
    """A :class:`RedactionMemo` for the rules that apply now: ``rules()``
    returns the daemon's current redactor (a reload may replace it), and a
    new memo over a copy of it (:func:`same_rules`) is made when it does."""

    def __init__(self, rules: Callable[[], Redactor]) -> None:
        self._rules = rules
        self._source: Redactor | None = None
        self._memo: RedactionMemo | None = None

    @property
    def memo(self) -> RedactionMemo | None:
        """The memo in use, if any yet (its size and evictions, for stats)."""
        return self._memo

    def get(self) -> RedactionMemo:
        source = self._rules()
        if self._memo is None or source is not self._source:
            self._source, self._memo = source, RedactionMemo(same_rules(source))
        return self._memo
