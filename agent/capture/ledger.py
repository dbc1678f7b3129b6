"""Loss accounting: every event the kernel makes is delivered or counted.

Stages, in order: the kernel (``generated``, ``lost_kernel`` when a ring-buffer
reserve fails or a map is full), the drain (``received``; ``decode_errors``;
``abandoned``: received, then never handed to any sink because the drain was
cancelled or a sink failed mid-batch), then each sink (``delivered`` or
``dropped``). Once the ring buffer has been drained after the probes were
detached, for every kind and every sink:

    generated == lost_kernel + decode_errors + abandoned + dropped + delivered

Counted in kernel events, not records: a folded record (see
:mod:`agent.capture.fold`) is ``count`` events delivered or dropped. While
capture runs, repeats the drain holds to fold are ``folding``: received,
not yet at any sink, so the law holds at any moment with them added; the
drain flushes them at stop, and ``folding`` is then 0.

``syscall`` is the exception in shape, not in rigour: syscalls are counted in
a kernel map, so ``received``/``delivered`` are the counts read from that map
(a reading supersedes the one before it; sinks get the cumulative values).
"""

from __future__ import annotations

from collections import Counter

import msgspec

from agent.capture.events import KINDS


class SinkAccount(msgspec.Struct, frozen=True):
    delivered: int
    dropped: int


class KindAccount(msgspec.Struct, frozen=True, kw_only=True):
    """The books of one kind. ``balanced``: every generated event is accounted
    for, at every sink. ``abandoned`` defaults to 0 so profiles written
    before it was counted still decode (``profile diff``)."""

    generated: int
    lost_kernel: int
    received: int
    decode_errors: int
    abandoned: int = 0
    delivered: int
    dropped_sink: int
    sinks: dict[str, SinkAccount]
    balanced: bool
    #: Received repeats the drain holds to fold (a gauge; 0 once stopped).
    folding: int = 0

    @property
    def lost(self) -> int:
        """Every loss of this kind before or at the sink that dropped most:
        kernel, decode, abandoned, sink (not the consumers' downstream)."""
        return self.lost_kernel + self.decode_errors + self.abandoned + self.dropped_sink


class DownstreamLosses:
    """Events a consumer took from its sink and then could not process: a
    record that failed to map, encode or be stored. Counted per kind and
    named stage (``evidence:map``, ``evidence:store``, ``events:encode``),
    never fatal: the consumer goes on with the next event. They are in the
    stats, the metrics (``tracehound_events_lost_total{stage}``) and the
    evidence's ``capture.loss`` records."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def count(self, kind: str, stage: str, n: int = 1) -> None:
        self._counts[(kind, stage)] += n

    def table(self) -> dict[str, dict[str, int]]:
        """``{kind: {stage: n}}``, sorted."""
        out: dict[str, dict[str, int]] = {}
        for (kind, stage), n in sorted(self._counts.items()):
            out.setdefault(kind, {})[stage] = n
        return out


class Ledger:
    """User-space counters; the kernel's own are read by the loader."""

    def __init__(self) -> None:
        #: Lost after a sink delivered them (see DownstreamLosses).
        self.downstream = DownstreamLosses()
        self.received: Counter[str] = Counter()
        self.decode_errors: Counter[str] = Counter()
        #: Received but never handed to any sink (the drain was cancelled or
        #: a sink failed mid-batch): a drop at every sink.
        self.abandoned: Counter[str] = Counter()
        #: Received repeats held by the drain's fold table, not yet delivered.
        self.folding: Counter[str] = Counter()

    def account(
        self,
        kernel: dict[str, tuple[int, int]],
        sinks: dict[str, dict[str, tuple[int, int]]],
    ) -> dict[str, KindAccount]:
        """Join the kernel's (generated, lost) per kind with the sinks'
        (delivered, dropped) per kind. Pure given its inputs.

        ``delivered``/``dropped_sink`` at the top are those of the sink that
        dropped most, so a single line never hides a loss.
        """
        books: dict[str, KindAccount] = {}
        for kind in KINDS:
            generated, lost = kernel.get(kind, (0, 0))
            received = self.received[kind]
            errors = self.decode_errors[kind]
            held = self.folding[kind]
            abandoned = self.abandoned[kind]
            per_sink = {
                name: SinkAccount(*counts.get(kind, (0, 0)))
                for name, counts in sorted(sinks.items())
            }
            if kind == "syscall":
                # Counts read from the kernel map; sinks carry them whole.
                per_sink = {name: SinkAccount(received, 0) for name in per_sink}
            worst = min(per_sink.values(), key=lambda s: (s.delivered, -s.dropped), default=None)
            delivered = worst.delivered if worst else received - errors - held - abandoned
            dropped = worst.dropped if worst else 0
            balanced = generated == lost + received and all(
                received == errors + held + abandoned + s.delivered + s.dropped
                for s in per_sink.values()
            )
            books[kind] = KindAccount(
                generated=generated,
                lost_kernel=lost,
                received=received,
                decode_errors=errors,
                abandoned=abandoned,
                delivered=delivered,
                dropped_sink=dropped,
                sinks=per_sink,
                balanced=balanced,
                folding=held,
            )
        return books
