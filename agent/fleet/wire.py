"""What goes over NATS: subjects, message ids, and the chain-head message.

Defined once here for both ends: the agent's publisher writes these and the
collector reads them.

- A record is published as **the exact bytes of its log line** (canonical JSON
  of the :class:`~agent.evidence.chain.ChainRecord`, without the newline), so
  the collector stores and re-hashes what the host committed, byte for byte,
  and nothing is encoded twice.
- Its subject is ``<prefix>.evidence.<host>.<type...>``: the record type with
  ``dev.tracehound.`` cut off, one token per dot (``file.open.v1``), so
  ``th.evidence.*.file.>`` selects every host's file records.
- Its ``Nats-Msg-Id`` is :func:`record_id` prefixed by the host token, so
  JetStream's duplicate window drops a republished record.
- Every few seconds the publisher sends a :class:`ChainHead` to
  ``<prefix>.heads.<host>``: what the host says its log holds.

Subject tokens cannot hold ``.``, ``*``, ``>``, whitespace or be empty, and
a host name or app-event type is not ours to trust: :func:`subject_token`
escapes every byte outside ``[A-Za-z0-9-]`` as ``_XX`` (two lowercase hex
digits; ``_`` itself too), which is reversible (:func:`token_text`) and
keeps distinct names distinct.
"""

from __future__ import annotations

import functools
import re
from typing import Final

import msgspec

from agent.evidence.chain import ChainRecord, Hex64, Seq
from agent.evidence.seal import Seal
from agent.evidence.types import TYPE_PREFIX

__all__ = [
    "HEADS",
    "MSG_ID_HEADER",
    "ChainHead",
    "evidence_subject",
    "evidence_wildcard",
    "heads_subject",
    "heads_wildcard",
    "message_id",
    "record_id",
    "subject_token",
    "token_text",
]

MSG_ID_HEADER: Final = "Nats-Msg-Id"
"""The JetStream header its duplicate window keys on."""

HEADS: Final = "heads"
EVIDENCE: Final = "evidence"

_SAFE: Final = re.compile(rb"[A-Za-z0-9-]")
_ESCAPE: Final = re.compile(r"_([0-9a-f]{2})")
_HEAD_ENCODER: Final = msgspec.json.Encoder(order="sorted")


@functools.lru_cache(maxsize=4096)
def subject_token(text: str) -> str:
    """``text`` as one NATS subject token: bytes outside ``[A-Za-z0-9-]`` as ``_XX``.

    Cached: the publisher asks for the same host and type tokens for every
    record, and escaping byte by byte was most of its CPU time.
    """
    raw = text.encode("utf-8", "surrogateescape")
    if not raw:
        return "_"
    return "".join(chr(b) if _SAFE.fullmatch(bytes((b,))) else f"_{b:02x}" for b in raw)


def token_text(token: str) -> str:
    """Invert :func:`subject_token` (``"_"`` alone is the empty string)."""
    if token == "_":
        return ""
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), token)
    return raw.encode("latin-1").decode("utf-8", "surrogateescape")


def _type_tokens(record_type: str) -> str:
    short = record_type.removeprefix(TYPE_PREFIX)
    return ".".join(subject_token(part) for part in short.split("."))


def evidence_subject(prefix: str, host: str, record_type: str) -> str:
    """``<prefix>.evidence.<host>.<type tokens>`` for one record."""
    return f"{prefix}.{EVIDENCE}.{subject_token(host)}.{_type_tokens(record_type)}"


def evidence_wildcard(prefix: str) -> str:
    """The subjects of every host's records (what the stream captures)."""
    return f"{prefix}.{EVIDENCE}.>"


def heads_subject(prefix: str, host: str) -> str:
    return f"{prefix}.{HEADS}.{subject_token(host)}"


def heads_wildcard(prefix: str) -> str:
    return f"{prefix}.{HEADS}.*"


def record_id(record: ChainRecord) -> str:
    """A record's id: its CloudEvent ``id``, or for the store's own records
    (``segment.start``, ``checkpoint``), which have none, its chain ``hash``."""
    body = record.body
    if isinstance(body, dict):
        event_id = body.get("id")
        if isinstance(event_id, str) and event_id and record.type.startswith(TYPE_PREFIX):
            return event_id
    return record.hash


def message_id(host: str, record: ChainRecord) -> str:
    """The ``Nats-Msg-Id``: host token and record id (ids are per host)."""
    return f"{subject_token(host)}:{record_id(record)}"


class ChainHead(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a host says its log holds, published to :func:`heads_subject`.

    ``seq``/``hash``: the newest committed record; ``seal``: the newest
    checkpoint's seal (None before the first); ``time_ns``: the host's wall
    clock when it sent this (for lag, never for ordering).
    """

    host: str
    seq: Seq
    hash: Hex64
    seal: Seal | None
    time_ns: int

    def encode(self) -> bytes:
        return _HEAD_ENCODER.encode(self)
