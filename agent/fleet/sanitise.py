"""The collector's write boundary: one received message to a row, or to a dead letter.

Sans-I/O and pure given the redactor (whose counters move): the collector
calls :meth:`Sanitiser.record` for every message on an evidence subject and
:meth:`Sanitiser.head` for every message on a heads subject. Nothing
received is trusted, the subject included (any NATS client with publish
rights chose it):

- a message over ``max_bytes``, a subject that is not
  ``<prefix>.evidence.<host token>.<type tokens>``, a host token that is not
  the canonical escape of its own text (two spellings of one host would be
  two hosts), a line that is not a ChainRecord, a record whose type is not
  the subject's, text PostgreSQL cannot hold (NUL, a lone surrogate) in a
  key column: a :class:`DeadLetter` with the reason and the first
  :data:`DEAD_LETTER_BYTES` bytes;
- a record whose hash is not the hash of its fields (checked on the record
  as received, before anything is changed): a dead letter with reason
  ``hash`` and ``bad_hash`` set, so the caller also records a chain event
  at its seq;
- unknown top-level fields: dropped (counted in ``unknown_fields``), the
  stored line is then the canonical form of the five fields;
- a line that is not the canonical form of its record (reformatted): stored
  as the canonical form, noted in ``altered``;
- ``never_store`` paths (dotted, into the body: ``data.env``): removed;
- the agent's redaction rules run again over the body's free-text fields
  (the ones :mod:`agent.redact.events` names: ``comm``, ``filename``,
  ``argv``, ``cwd``, ``exe``, ``path``, ``path2``, ``cmdline``, a non-IP
  endpoint's ``address``): what they change is counted and noted.

The stored ``line`` is the received bytes unless ``altered`` is set; the
hash in ``chain`` is always the received (verified) one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

import blake3
import msgspec

from agent.evidence.canonical import MAX_DEPTH, CanonicalError, canonical
from agent.evidence.chain import ChainRecord
from agent.evidence.layout import SEGMENT_START
from agent.evidence.types import TYPE_PREFIX
from agent.fleet.columns import RecordColumns, columns_of
from agent.fleet.wire import EVIDENCE, HEADS, ChainHead, record_id, subject_token, token_text
from agent.redact.engine import Redactor

__all__ = [
    "DEAD_LETTER_BYTES",
    "DeadLetter",
    "Row",
    "SanitiseStats",
    "Sanitiser",
    "pg_text",
    "sanitise_batch",
]

DEAD_LETTER_BYTES: Final = 4096
"""The most bytes of a dead letter's message kept (the rest is counted, not stored)."""

_FIELDS: Final = frozenset({"seq", "prev", "hash", "type", "body"})


def _no_float(text: str) -> object:
    """msgspec's ``float_hook``: canonical JSON has no floats (the slow path says so)."""
    raise ValueError("a float")


_DECODE: Final = msgspec.json.Decoder(ChainRecord, float_hook=_no_float)
_SORTED: Final = msgspec.json.Encoder(order="sorted")
_BIG_INT: Final = re.compile(rb"[:,\[]-?[0-9]{16,}")
_ANY: Final = msgspec.json.Decoder()
_TEXT_FIELDS: Final = ("comm", "filename", "cwd", "exe", "path", "path2")
_ARGV_FIELDS: Final = ("argv", "cmdline")
_CACHED: Final = 4096


class DeadLetter(msgspec.Struct, frozen=True):
    """A message not stored: why, where it came, and its first bytes."""

    subject: str
    reason: str
    data: bytes
    host: str | None = None
    seq: int | None = None
    bad_hash: bool = False


class Row(msgspec.Struct, frozen=True):
    """One record ready for ``chain`` and ``records``.

    ``time_ns`` is None when the record says no time (the writer takes the
    host's previous record's); ``columns``: the query columns of a
    CloudEvent (None for the store's own records); ``altered`` names what
    the collector changed in ``line`` ("" when nothing: the line is the
    received bytes).
    """

    host: str
    seq: int
    id: str
    hash: str
    prev: str
    type: str
    time_ns: int | None
    columns: RecordColumns | None
    altered: str
    line: bytes
    body: Any


class SanitiseStats(msgspec.Struct):
    """What the sanitiser did, by kind: the collector's metrics read these."""

    dead_letters: dict[str, int] = {}
    unknown_fields: int = 0
    never_store: int = 0
    redacted: int = 0
    altered: int = 0

    def dead(self, reason: str) -> None:
        self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1


def pg_text(text: str) -> str | None:
    """``text`` if PostgreSQL's ``text`` can hold it (no NUL, valid UTF-8), else None."""
    if "\x00" in text:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text


def _safe(text: str | None) -> str | None:
    """A query column's text: NUL and lone surrogates escaped, never refused."""
    if text is None or pg_text(text) is not None:
        return text
    return (
        text.encode("utf-8", "surrogateescape")
        .decode("utf-8", "backslashreplace")
        .replace("\x00", "\\x00")
    )


def _pg_safe(cols: RecordColumns) -> RecordColumns:
    """The columns with every text as PostgreSQL can hold it (:func:`_safe`)."""
    return msgspec.structs.replace(
        cols,
        comm=_safe(cols.comm),
        exe=_safe(cols.exe),
        path=_safe(cols.path),
        container=_safe(cols.container),
        remote=_safe(cols.remote),
    )


class Sanitiser:
    """Checks and cleans what the collector receives (see the module doc).

    ``prefix``: the subjects' prefix; ``never_store``: dotted body paths;
    ``redactor``: the agent's rules (``Config().evidence.redactor()``).
    """

    def __init__(
        self,
        prefix: str,
        *,
        redactor: Redactor,
        never_store: Sequence[str] = (),
        max_bytes: int = 1 << 20,
    ) -> None:
        self._evidence = f"{prefix}.{EVIDENCE}."
        self._heads = f"{prefix}.{HEADS}."
        self._redactor = redactor
        self._never: tuple[tuple[str, ...], ...] = tuple(
            tuple(path.split(".")) for path in never_store if path
        )
        self._max_bytes = max_bytes
        self.stats = SanitiseStats()
        # Escaping is per byte in Python: a fleet has few hosts and types, so
        # each token's answer is kept (bounded: cleared when full).
        self._hosts: dict[str, str | None] = {}
        self._types: dict[str, list[str]] = {}

    def _dead(
        self,
        subject: str,
        reason: str,
        data: bytes,
        *,
        host: str | None = None,
        seq: int | None = None,
        bad_hash: bool = False,
    ) -> DeadLetter:
        self.stats.dead(reason.split(":", 1)[0])
        shown_subject = _safe(subject) or ""
        return DeadLetter(
            shown_subject[:1024],
            (_safe(reason) or "")[:1024],
            bytes(data[:DEAD_LETTER_BYTES]),
            host,
            seq,
            bad_hash,
        )

    def host_of(self, subject: str, base: str) -> tuple[str, list[str]] | None:
        """The host named by ``subject`` under ``base`` and the tokens after it,
        or None if the subject is not there or its host token is not canonical."""
        if not subject.startswith(base):
            return None
        tokens = subject[len(base) :].split(".")
        if not tokens or not tokens[0]:
            return None
        token = tokens[0]
        if token in self._hosts:
            host = self._hosts[token]
        else:
            host = _host_of_token(token)
            if len(self._hosts) >= _CACHED:
                self._hosts.clear()
            self._hosts[token] = host
        return None if host is None else (host, tokens[1:])

    def _type_tokens(self, record_type: str) -> list[str]:
        tokens = self._types.get(record_type)
        if tokens is None:
            tokens = _type_tokens(record_type)
            if len(self._types) >= _CACHED:
                self._types.clear()
            self._types[record_type] = tokens
        return tokens

    def record(self, subject: str, data: bytes) -> Row | DeadLetter:
        """One message from an evidence subject: a row to store, or a dead letter."""
        if len(data) > self._max_bytes:
            return self._dead(subject, f"oversized: {len(data)} bytes", data)
        named = self.host_of(subject, self._evidence)
        if named is None:
            return self._dead(subject, "subject: not <prefix>.evidence.<host>.<type>", data)
        host, type_tokens = named
        record, dropped, strict = self._decode(data)
        if isinstance(record, str):
            return self._dead(subject, f"malformed: {record}", data, host=host)
        if type_tokens != self._type_tokens(record.type):
            return self._dead(subject, "subject: its type is not the record's", data, host=host)
        line = _fast_canonical(data, record) if strict else None
        if line is None:
            try:
                line = canonical(msgspec.structs.asdict(record))
            except CanonicalError as exc:
                return self._dead(subject, f"noncanonical: {exc}", data, host=host, seq=record.seq)
        digest = _hash_of_canonical(line, record)
        if digest != record.hash:
            return self._dead(
                subject,
                "hash: the record's hash does not match its contents",
                data,
                host=host,
                seq=record.seq,
                bad_hash=True,
            )
        rid = record_id(record)
        if pg_text(record.type) is None or pg_text(rid) is None:
            return self._dead(subject, "text: type or id PostgreSQL cannot hold", data, host=host)
        altered: list[str] = []
        if dropped:
            self.stats.unknown_fields += dropped
            altered.append(f"unknown-fields:{dropped}")
        elif line != data:
            altered.append("canonical")
        body = record.body
        stripped = self._strip(body)
        if stripped:
            self.stats.never_store += stripped
            altered.append(f"never-store:{stripped}")
        fired = self._redact(body)
        if fired:
            self.stats.redacted += 1
            altered.append("redacted:" + ",".join(sorted(fired)))
        if altered:
            self.stats.altered += 1
            if stripped or fired:
                try:
                    line = canonical(
                        {
                            "seq": record.seq,
                            "prev": record.prev,
                            "hash": record.hash,
                            "type": record.type,
                            "body": body,
                        }
                    )
                except CanonicalError:  # the redactor only writes str: cannot happen
                    return self._dead(subject, "noncanonical: after redaction", data, host=host)
        else:
            line = bytes(data)
        return self._row(host, record, rid, body, line, ",".join(altered))

    def _row(
        self, host: str, record: ChainRecord, rid: str, body: Any, line: bytes, altered: str
    ) -> Row:
        # The query columns as agent.fleet.columns defines them for the
        # readers (fleet events pushes its filters down to them), of what
        # is stored: the body after stripping and redaction.
        event = isinstance(body, dict) and record.type.startswith(TYPE_PREFIX)
        cols = _pg_safe(columns_of(body)) if event else None
        time_ns = cols.time_ns if cols is not None else None
        if time_ns is None and isinstance(body, dict) and record.type == SEGMENT_START:
            started = body.get("started_ms")
            if type(started) is int and 0 <= started < 1 << 53:
                time_ns = started * 1_000_000
        return Row(
            host=host,
            seq=record.seq,
            id=rid,
            hash=record.hash,
            prev=record.prev,
            type=record.type,
            time_ns=time_ns,
            columns=cols,
            altered=altered,
            line=line,
            body=body,
        )

    def head(self, subject: str, data: bytes) -> ChainHead | DeadLetter:
        """One message from a heads subject: the head, or a dead letter."""
        if len(data) > self._max_bytes:
            return self._dead(subject, f"oversized: {len(data)} bytes", data)
        named = self.host_of(subject, self._heads)
        if named is None or named[1]:
            return self._dead(subject, "subject: not <prefix>.heads.<host>", data)
        try:
            head = msgspec.json.decode(data, type=ChainHead)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return self._dead(subject, f"malformed: not a chain head: {exc}", data)
        if head.host != named[0]:
            return self._dead(subject, "subject: the head's host is not the subject's", data)
        return head

    def _decode(self, data: bytes) -> tuple[ChainRecord | str, int, bool]:
        """The record, how many unknown top-level fields were dropped, and
        whether it came through the strict decoder (no floats: the fast
        canonical check may be used); or why there is no record."""
        try:
            return _DECODE.decode(data), 0, True
        except msgspec.ValidationError:
            pass
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return f"not JSON: {exc}", 0, False
        try:
            fields = _ANY.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return f"not JSON: {exc}", 0, False
        if not isinstance(fields, dict) or not fields.keys() >= _FIELDS:
            return "not a chain record (seq, prev, hash, type, body)", 0, False
        dropped = len(fields) - len(_FIELDS)
        try:
            record = msgspec.convert({k: fields[k] for k in _FIELDS}, ChainRecord)
        except msgspec.ValidationError as exc:
            return f"not a chain record: {exc}", 0, False
        return record, dropped, False

    def _strip(self, body: Any) -> int:
        removed = 0
        for path in self._never:
            node = body
            for key in path[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict) and path[-1] in node:
                del node[path[-1]]
                removed += 1
        return removed

    def _redact(self, body: Any) -> set[str]:
        """Redact the body's ``data`` free-text fields in place; the rules that fired."""
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return set()
        fired: set[str] = set()
        redactor = self._redactor
        for field in _TEXT_FIELDS:
            value = data.get(field)
            if isinstance(value, str) and value:
                result = redactor.redact_text_detail(value, field)
                if result.text != value:
                    data[field] = result.text
                    fired.update(result.fired or ("changed",))
        for field in _ARGV_FIELDS:
            value = data.get(field)
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                argv = redactor.redact_argv(value, field)
                if list(argv.argv) != value:
                    data[field] = list(argv.argv)
                    fired.update(argv.fired or ("changed",))
        endpoint = data.get("endpoint")
        if isinstance(endpoint, dict) and endpoint.get("family") not in ("ipv4", "ipv6"):
            address = endpoint.get("address")
            if isinstance(address, str) and address:
                result = redactor.redact_text_detail(address, "endpoint")
                if result.text != address:
                    endpoint["address"] = result.text
                    fired.update(result.fired or ("changed",))
        return fired


def _host_of_token(token: str) -> str | None:
    """The host a subject token names, or None if the token is not the
    canonical escape of a name PostgreSQL can hold."""
    try:
        host = token_text(token)
    except (UnicodeDecodeError, UnicodeEncodeError, ValueError):
        return None
    if not host or subject_token(host) != token or pg_text(host) is None:
        return None
    return host


def _type_tokens(record_type: str) -> list[str]:
    short = record_type.removeprefix(TYPE_PREFIX)
    return [subject_token(part) for part in short.split(".")]


def _fast_canonical(data: bytes, record: ChainRecord) -> bytes | None:
    """``data`` itself when it is provably the record's canonical form, else
    None (then :func:`canonical` decides, slowly, with the reason).

    The record was decoded with floats refused (:func:`_no_float`); ASCII
    bytes, no integer token of 16 digits or more (the safe range ends at 16),
    fewer brackets than the depth limit, and msgspec's sorted encoding equal
    to the bytes: then every key and string is ASCII (an escape that made
    one non-ASCII would come back raw and differ), which is where msgspec's
    sorted output is exactly JCS (what :func:`canonical` relies on too).
    """
    if not data.isascii() or _BIG_INT.search(data) is not None:
        return None
    if data.count(b"[") + data.count(b"{") >= MAX_DEPTH:
        return None
    try:
        line = _SORTED.encode(msgspec.structs.asdict(record))
    except (UnicodeEncodeError, msgspec.EncodeError):
        return None
    return data if line == data else None


def _hash_of_canonical(line: bytes, record: ChainRecord) -> str:
    """The record's hash from its canonical line: the line minus its ``"hash"``
    member (keys sort body < hash < prev, so it sits right after the body)."""
    member = b',"hash":"%s"' % record.hash.encode()
    at = line.rfind(member + b',"prev":"')
    if at < 0:  # cannot happen for a canonical ChainRecord line
        return ""
    return blake3.blake3(line[:at] + line[at + len(member) :]).hexdigest()


def sanitise_batch(
    sanitiser: Sanitiser, prefix: str, messages: Iterable[tuple[str, bytes]]
) -> tuple[list[Row], list[DeadLetter], list[ChainHead]]:
    """One fetched batch of ``(subject, data)``: the rows to store (by host
    and seq, the order the chain check reads them in), the dead letters,
    and the heads (``<prefix>.heads.*``)."""
    rows: list[Row] = []
    dead: list[DeadLetter] = []
    heads: list[ChainHead] = []
    heads_base = f"{prefix}.{HEADS}."
    for subject, data in messages:
        if subject.startswith(heads_base):
            head = sanitiser.head(subject, data)
            if isinstance(head, ChainHead):
                heads.append(head)
            else:
                dead.append(head)
            continue
        got = sanitiser.record(subject, data)
        if isinstance(got, Row):
            rows.append(got)
        else:
            dead.append(got)
    rows.sort(key=lambda r: (r.host, r.seq))
    return rows, dead, heads
