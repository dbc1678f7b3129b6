"""The mapper as a reader sees it: each record decoded back from its bytes.

The mapper hands out :class:`EvidenceRecord` (the typed CloudEvent and its
canonical bytes). Tests about what a record *says* read it the way every
consumer does, from the bytes; :func:`plain` also checks that the typed
event and the bytes say the same thing, so neither can drift from the other.
"""

from __future__ import annotations

from typing import Any

import msgspec

from agent.evidence.mapper import Mapper, decode
from agent.evidence.types import CloudEvent, EvidenceRecord

_MAKERS = frozenset(
    {
        "anchor_record",
        "map",
        "capture_loss",
        "capture_degraded",
        "capture_start",
        "capture_config",
        "capture_recovered",
        "capture_stop",
    }
)


def plain(record: EvidenceRecord) -> CloudEvent[dict[str, Any]]:
    """``record`` decoded from its bytes, after checking it matches its typed form."""
    decoded = decode(record.body)
    assert decoded.data == msgspec.to_builtins(record.payload)
    assert (decoded.type, decoded.id) == (record.type, record.id)
    return decoded


class PlainMapper:
    """Wraps a :class:`Mapper`; record-making methods return :func:`plain` records."""

    def __init__(self, mapper: Mapper) -> None:
        self.mapper = mapper

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.mapper, name)
        if name == "records":
            return lambda events: [plain(r) for r in attr(events)]
        if name in _MAKERS:
            return lambda *args, **kwargs: plain(attr(*args, **kwargs))
        return attr


def plain_mapper(**kwargs: Any) -> Any:
    """``Mapper(**kwargs)`` as a :class:`PlainMapper` (typed Any for the tests)."""
    return PlainMapper(Mapper(**kwargs))
