"""What the daemon and its evidence worker say to each other. Sans-I/O.

The evidence work (map, redact, encode, chain, write, seal) runs in a
process of its own (:mod:`agent.evidence.worker_child`), so it has a core of
its own and never holds the GIL against the drain. The daemon
(:class:`agent.evidence.worker.EvidenceWorker`) and the worker share one
``SOCK_STREAM`` socketpair, carrying frames:

    u32 length (little-endian, of what follows) | u8 tag | payload

Tags, daemon to worker: :data:`EVENTS` (one drain batch of capture events,
pickled: one C call to encode, one to decode, and the wire decode is not
done twice) and :data:`CONTROL` (one :data:`Control` message, msgpack).

Why pickle for events: the capture keeps bytes that are not UTF-8 as
surrogate escapes in its ``str`` fields (argv, paths, comm), which no
UTF-8 format (msgpack, JSON) can carry, and a hostile file name must not
stop the evidence. Pickle carries every ``str``, and measured here costs
what msgpack does (about 1 us per event each way, and half the bytes: it
shares repeated strings). Unpickling runs code named by the data, so it
is only ever done on this private socketpair, from the daemon that
started the worker: nothing else can write to it. Worker to daemon: :data:`PUBLISHED` (records just committed, for
the live tail: ``[seq, type, id, body]`` each, the log's own bytes) and
:data:`REPORT` (one :data:`Report` message).

The conversation: ``Start``; the worker answers ``Opened`` (or ``Refused``,
one line, and exits). Then events and, every fraction of a second, the
capture's books (``Books``: the worker's loss records are computed from
them); ``Reconfigure``, ``Extent`` and ``Append`` (a producer's event)
are requests answered by ``Reply`` with the same ``request``. Every committed batch comes back as a
published frame, whether or not a tail client listens (a client that
connects must not miss what was committed while the daemon told the worker
so; the cost is one msgpack encode and decode per batch). The worker sends ``Status`` several times a second and a last one with
``final`` set. The daemon ends the conversation by closing its side for
writing after the last events and books: the worker then finishes (the last
loss, stop and seal records), sends the final status and exits.

What can go wrong: a frame longer than :data:`MAX_FRAME` or a payload that
does not decode is a protocol error (:class:`ProtocolError`): both ends are
this same package, so it is a bug, and the side that sees it says so and
ends the conversation; the daemon then counts what the worker did not
confirm as lost.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, Final

import msgspec

from agent.capture.events import Event
from agent.capture.ledger import KindAccount
from agent.capture.loader import ProbeStatus
from agent.evidence.app_event import AppEvent
from agent.evidence.loss_books import MAP_STAGE, STORE_STAGE
from agent.evidence.pipeline import StoreOptions
from agent.redact.events import MemoStats
from agent.redact.rules import Rule

__all__ = [
    "CONTROL",
    "EVENTS",
    "MAX_FRAME",
    "PUBLISHED",
    "REPORT",
    "WORKER_OWN_STAGES",
    "Append",
    "Books",
    "Control",
    "Extent",
    "FrameReader",
    "Opened",
    "ProtocolError",
    "Reconfigure",
    "Refused",
    "Reply",
    "Report",
    "Start",
    "Status",
    "decode_events",
    "encode_events",
    "frame",
]

EVENTS: Final = 1
CONTROL: Final = 2
PUBLISHED: Final = 3
REPORT: Final = 4

MAX_FRAME: Final = 256 * 2**20
"""Longest frame either side accepts: far above a drain batch (4096 events
of at most a few KiB each), far below what would hurt."""

_LENGTH: Final = struct.Struct("<IB")

WORKER_OWN_STAGES: Final = frozenset({MAP_STAGE, STORE_STAGE})
"""The loss stages the worker counts (and reports back in its status)."""


class ProtocolError(RuntimeError):
    """A frame that cannot be what this package sends: a bug, or a corrupt pipe."""


# -- daemon to worker ---------------------------------------------------------
class Start(msgspec.Struct, tag="start", kw_only=True):
    """Open the log in ``state_dir`` and start mapping. ``source`` is how
    errors name the directory (``--evidence DIR``); ``rules`` and
    ``max_field_chars`` rebuild the daemon's redactor exactly."""

    state_dir: str
    source: str
    probes: list[ProbeStatus]
    config: dict[str, Any]
    rules: list[Rule]
    max_field_chars: int
    store: StoreOptions
    traceparent: str | None = None
    tracestate: str | None = None
    group: int | None = None


class Books(msgspec.Struct, tag="books", kw_only=True):
    """The capture's books now (the session's stats and the sinks' per-kind
    counts): what the worker's ``capture.loss`` records are made from."""

    kinds: dict[str, KindAccount]
    sinks: dict[str, dict[str, tuple[int, int]]]
    #: What the daemon's other consumers lost after their sinks delivered
    #: (``events:encode``...), by kind and stage: never a stage the worker
    #: counts itself (:data:`WORKER_OWN_STAGES`).
    downstream: dict[str, dict[str, int]] = {}
    #: The last books: capture has stopped and everything was delivered.
    #: An end of the stream without them means the daemon died.
    final: bool = False


class Reconfigure(msgspec.Struct, tag="reconfigure", kw_only=True):
    """A reload: record ``config`` (a ``capture.config`` record), then apply
    the rules (None: keep) and the store options (None: keep)."""

    request: int
    config: dict[str, Any]
    rules: list[Rule] | None = None
    max_field_chars: int = 0
    store: StoreOptions | None = None


class Extent(msgspec.Struct, tag="extent", kw_only=True):
    """Ask for the log's committed extent (segment paths and sizes)."""

    request: int


class Append(msgspec.Struct, tag="append", kw_only=True):
    """Map and queue a producer's event (an ``app.event.v1`` record); the
    ``Reply`` says its id, or why there is none (``refused``)."""

    request: int
    event: AppEvent


Control = Start | Books | Reconfigure | Extent | Append


# -- worker to daemon ---------------------------------------------------------
class Opened(msgspec.Struct, tag="opened", kw_only=True):
    """The log is open and the start records are queued."""

    sealed: bool | None
    capacity: int


class Refused(msgspec.Struct, tag="refused", kw_only=True):
    """The log cannot be used (locked, damaged, a bad TRACEPARENT):
    ``usage`` says whether it is the user's input, ``message`` is one line."""

    usage: bool
    message: str


class Status(msgspec.Struct, tag="status", kw_only=True):
    """The worker's side of the books and its state, several times a second.

    ``taken``: event batches received from the daemon (the daemon knows
    what each held); ``losses``: the worker's own losses by kind and stage
    (cumulative).
    """

    taken: int
    losses: dict[str, dict[str, int]]
    mapped: int
    published: int
    depth: int
    failing: str | None
    failures: int
    lost_to_store: int
    owes_the_log: bool
    sealed: bool | None
    checkpoint_age_s: float | None
    memo: MemoStats | None
    #: Committed records not sent back for the live tail (it lagged).
    tail_dropped: int = 0
    final: bool = False


class Reply(msgspec.Struct, tag="reply", kw_only=True):
    """The answer to request ``request``: an extent, or None when done; to
    an ``Append``, the record's ``record_id`` and ``time``, or ``refused``
    (one line)."""

    request: int
    extent: list[tuple[str, int]] | None = None
    record_id: str | None = None
    time: str | None = None
    refused: str | None = None


Report = Opened | Refused | Status | Reply

PUBLISHED_TYPE: Final = list[tuple[int, str, str, bytes]]


def encode_events(batch: list[Event]) -> bytes:
    """One batch of events as an :data:`EVENTS` payload."""
    return pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)


def decode_events(payload: bytes) -> list[Event]:
    """An :data:`EVENTS` payload back into its events (see the module's note).
    Raises ProtocolError for anything that is not a list."""
    try:
        batch = pickle.loads(payload)
    except Exception as err:  # a corrupt pickle raises many kinds
        raise ProtocolError(f"an events frame does not decode ({err})") from None
    if not isinstance(batch, list):
        raise ProtocolError(f"an events frame holds a {type(batch).__name__}")
    return batch


def frame(tag: int, payload: bytes) -> bytes:
    """One frame: length, tag, payload."""
    if len(payload) + 1 > MAX_FRAME:
        raise ProtocolError(f"a frame of {len(payload) + 1} bytes is over {MAX_FRAME}")
    return _LENGTH.pack(len(payload) + 1, tag) + payload


class FrameReader:
    """Cuts a byte stream into frames, whatever the reads' sizes. Pure."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The frames completed by ``data``, in order. Raises ProtocolError
        for a length that no frame can have."""
        buffer = self._buffer
        buffer += data
        out: list[tuple[int, bytes]] = []
        start = 0
        while len(buffer) - start >= 4:
            (length,) = struct.unpack_from("<I", buffer, start)
            if not 1 <= length <= MAX_FRAME:
                raise ProtocolError(f"a frame length of {length} bytes")
            end = start + 4 + length
            if end > len(buffer):
                break
            out.append((buffer[start + 4], bytes(buffer[start + 5 : end])))
            start = end
        del buffer[:start]
        return out

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet (non-zero at EOF: a cut frame)."""
        return len(self._buffer)
