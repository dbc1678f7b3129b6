"""The loss books of the evidence log: what was lost, by kind and stage. Pure.

Every ``capture.loss`` record is a delta of :func:`loss_counts` since the
last report in the log (:func:`loss_delta`); a record that could not be
written is counted under the ledger kind it stands for
(:func:`kind_of_record`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from agent.capture.ledger import KindAccount
from agent.evidence.record_types import (
    TYPE_APP,
    TYPE_EXEC,
    TYPE_EXIT,
    TYPE_FORK,
    TYPE_SEEN,
    TYPE_SYSCALLS,
    TYPE_URING,
)
from agent.evidence.types import TYPE_PREFIX

__all__ = [
    "MAP_STAGE",
    "STORE_STAGE",
    "WORKER_STAGE",
    "kind_of_record",
    "loss_counts",
    "loss_delta",
]


def loss_counts(
    kinds: Mapping[str, KindAccount],
    sinks: Mapping[str, Mapping[str, tuple[int, int]]] | None = None,
    downstream: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, dict[str, int]]:
    """Cumulative losses per kind and stage: kernel, decode, each sink, and
    what consumers lost after a sink delivered (``downstream``, e.g.
    ``evidence:map``). Pure.

    The ledger counts ``syscall`` in syscalls (not in readings) and has no
    books for /proc ``process`` records, so for those kinds each sink's own
    count of dropped records is used (``sinks``: name -> kind -> (delivered,
    dropped)); a dropped reading or seed record is then on the record too.
    """
    out: dict[str, dict[str, int]] = {}
    for kind, books in kinds.items():
        row = {"kernel": books.lost_kernel, "decode": books.decode_errors}
        if books.abandoned:  # only when it happened: the log's bytes stay as they were
            row["abandoned"] = books.abandoned
        for sink, account in books.sinks.items():
            row[f"sink:{sink}"] = account.dropped
        out[kind] = row
    for name, per_kind in (sinks or {}).items():
        for kind in ("syscall", "process"):
            if kind in per_kind:
                out.setdefault(kind, {})[f"sink:{name}"] = per_kind[kind][1]
    for kind, stages in (downstream or {}).items():
        out.setdefault(kind, {}).update(stages)
    return out


def loss_delta(
    now: Mapping[str, Mapping[str, int]], before: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """What was lost since ``before``, only kinds with a loss. Pure."""
    delta: dict[str, dict[str, int]] = {}
    for kind, stages in now.items():
        row = {
            stage: count - before.get(kind, {}).get(stage, 0)
            for stage, count in stages.items()
            if count - before.get(kind, {}).get(stage, 0) > 0
        }
        if row:
            delta[kind] = row
    return delta


_KIND_OF_TYPE: Final = {
    TYPE_EXEC: "exec",
    TYPE_FORK: "fork",
    TYPE_EXIT: "exit",
    TYPE_SYSCALLS: "syscall",
    TYPE_SEEN: "process",
    TYPE_URING: "uring",
    TYPE_APP: "app",
}


def kind_of_record(record_type: str) -> str:
    """The ledger kind a record of ``record_type`` stands for (``capture``
    for the records about the capture itself), to count it when it is
    lost. Pure."""
    found = _KIND_OF_TYPE.get(record_type)
    if found is not None:
        return found
    if record_type.startswith(TYPE_PREFIX + "file."):
        return "file"
    if record_type.startswith(TYPE_PREFIX + "network."):
        return "net"
    return "capture"


STORE_STAGE: Final = "evidence:store"
"""The loss stage of records the log could not take (disk full, I/O error)."""
MAP_STAGE: Final = "evidence:map"
"""The loss stage of events the mapper could not turn into a record."""
WORKER_STAGE: Final = "evidence:worker"
"""The loss stage of events the evidence worker never confirmed taking: it died."""
