"""The evidence envelope: a CloudEvents 1.0 record, the time anchor, and their time format.

Defined here, once, so that the mapper (which makes records) and the OCSF
projection (which reads them) share one definition without one importing the
other's internals.

Times are integers of nanoseconds since the Unix epoch, written as RFC 3339
UTC with exactly nine fractional digits (``2024-05-01T12:00:00.000000001Z``).
Both directions use integer arithmetic only: a float has 53 bits of mantissa,
and nanoseconds since 1970 need 61, so a float would silently round the last
digits away (and differently on different paths), breaking byte-identical
re-mapping. The fixed width also means the text sorts like the number.

What can go wrong: a time before 0001-01-01 or after 9999-12-31 has no RFC
3339 form and raises :class:`ValueError`; so does a malformed string given to
:func:`parse_rfc3339_ns`.
"""

from __future__ import annotations

import re
from typing import Any, Final, Generic, NamedTuple, TypeVar

import msgspec

__all__ = [
    "DATACONTENTTYPE",
    "EXTENSION_NAME",
    "PRODUCER",
    "SPECVERSION",
    "TYPE_PREFIX",
    "Anchor",
    "CloudEvent",
    "EvidenceRecord",
    "format_rfc3339_ns",
    "parse_rfc3339_ns",
]

SPECVERSION: Final = "1.0"
"""The CloudEvents specification version every record declares."""

DATACONTENTTYPE: Final = "application/json"
"""``data`` is always a JSON object."""

PRODUCER: Final = "tracehound"
"""The ``thproducer`` extension: which program made the record."""

TYPE_PREFIX: Final = "dev.tracehound."
"""Reverse-DNS prefix of every record ``type``; each type ends in a version (``.v1``)."""

EXTENSION_NAME: Final = re.compile(r"[a-z0-9]{1,20}")
"""CloudEvents 1.0 extension attribute names: lower-case a-z and 0-9, at most 20."""

_NS_PER_SECOND: Final = 1_000_000_000
_SECONDS_PER_DAY: Final = 86_400
# Days from 1970-01-01 to 0001-01-01 and to 10000-01-01 (proleptic Gregorian).
_MIN_DAYS: Final = -719_162
_MAX_DAYS: Final = 2_932_897
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z",
)


class Anchor(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the kernel's clock meets the wall clock, read once per boot or run.

    Kernel timestamps are CLOCK_BOOTTIME nanoseconds: they do not jump when
    the wall clock is set, but mean nothing off this boot. The caller reads
    both clocks back to back (``wall_ns`` from CLOCK_REALTIME, ``boottime_ns``
    from CLOCK_BOOTTIME) and hands them to the mapper, which never reads a
    clock itself. A record's wall time is then
    ``wall_ns + (ts_ns - boottime_ns)``, exact to the nanosecond; its error is
    the wall clock's error at the anchor plus drift since, and a wall-clock
    step after the anchor does not move records.

    ``boot_id`` is ``/proc/sys/kernel/random/boot_id``: it tells which boot
    the kernel timestamps belong to.
    """

    boot_id: str
    wall_ns: int
    boottime_ns: int


DataT = TypeVar("DataT")


class CloudEvent(
    msgspec.Struct,
    Generic[DataT],
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    forbid_unknown_fields=True,
):
    """One evidence record: a CloudEvents 1.0 envelope (JSON format) and its payload.

    Required CloudEvents attributes: ``specversion``, ``id``, ``source``,
    ``type``; ``time``, ``subject`` and ``datacontenttype`` are optional ones
    tracehound fills in (``subject`` only when there is one). The ``th*``
    attributes are extensions:

    - ``thseq``: position in the mapped stream, from 0 (the anchor record);
    - ``thhash``: blake3 (hex) of the canonical JSON bytes of ``data``, so a
      payload can be checked without trusting the envelope around it;
    - ``thproducer``/``thversion``: the program and its version;
    - ``thhost``/``thbootid``: the host, and which of its boots.

    ``traceparent``/``tracestate`` (the distributed-tracing extension) are
    present only when the mapper was given them; ``None`` fields are left out
    of the encoding entirely (``omit_defaults``), so their absence does not
    change a record's bytes.

    ``data`` is generic: the mapper puts the typed payload of the record's
    kind there (:mod:`agent.evidence.payloads`); a reader that decodes a
    record as plain ``CloudEvent`` gets a ``dict`` of plain JSON values, and
    ``CloudEvent[msgspec.Raw]`` keeps the payload's bytes as they are.
    """

    specversion: str
    id: str
    source: str
    type: str
    time: str
    datacontenttype: str
    data: DataT
    thseq: int
    thhash: str
    thproducer: str
    thversion: str
    thhost: str
    thbootid: str
    subject: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None


class EvidenceRecord(NamedTuple):
    """A record as the mapper made it: its ``type``, ``id`` and ``body``, the
    CloudEvent's canonical bytes, made once. Everything downstream (the
    chain, the store, the live tail) uses ``body`` as it is; :attr:`payload`
    and :attr:`event` read the rest back from it for whoever wants them.

    ``typed`` is the payload Struct when the mapper built one (records about
    the capture itself), else None: a kernel event's payload bytes are
    composed without it (:mod:`agent.evidence.payload_bytes`), and
    :attr:`payload` decodes it from ``body`` when asked.
    """

    type: str
    id: str
    typed: Any
    body: bytes

    @property
    def payload(self) -> Any:
        """The typed payload (:mod:`agent.evidence.payloads`): ``typed``, or
        decoded from :attr:`body` into the Struct the record's type names.
        Raises :class:`msgspec.ValidationError` for bytes that are not one."""
        if self.typed is not None:
            return self.typed
        # record_types imports this module: imported here, when first needed.
        from agent.evidence.record_types import decode_payload

        raw = msgspec.json.decode(self.body, type=CloudEvent[msgspec.Raw]).data
        return decode_payload(self.type, raw)

    @property
    def event(self) -> CloudEvent[Any]:
        """The CloudEvent, decoded from :attr:`body`, with the typed payload as ``data``."""
        envelope = msgspec.json.decode(self.body, type=CloudEvent[msgspec.Raw])
        return msgspec.structs.replace(envelope, data=self.payload)


def format_rfc3339_ns(epoch_ns: int) -> str:
    """Write nanoseconds since the Unix epoch as RFC 3339 UTC, nine fractional digits.

    Integer arithmetic only (no datetime, no float). Raises ValueError for a
    time outside years 1 to 9999, or a non-int.
    """
    if isinstance(epoch_ns, bool) or not isinstance(epoch_ns, int):
        raise ValueError(f"a time must be int nanoseconds, got {epoch_ns!r}")
    seconds, nanos = divmod(epoch_ns, _NS_PER_SECOND)  # floor: nanos is 0..999999999
    days, second_of_day = divmod(seconds, _SECONDS_PER_DAY)
    if not _MIN_DAYS <= days < _MAX_DAYS:
        raise ValueError(f"{epoch_ns} ns since 1970 is outside years 1 to 9999")
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{nanos:09d}Z"


def parse_rfc3339_ns(text: str) -> int:
    """Read an RFC 3339 UTC time (``Z`` only, up to nine fractional digits) as epoch ns.

    The inverse of :func:`format_rfc3339_ns`. Offsets other than ``Z`` and
    leap seconds (``:60``) are refused with ValueError: tracehound never
    writes them, so meeting one means the record came from elsewhere.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 UTC time with a Z offset: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = match.group(7) or ""
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)):
        raise ValueError(f"no such date: {text!r}")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"no such time of day: {text!r}")
    if year < 1:
        raise ValueError(f"year 0 is outside years 1 to 9999: {text!r}")
    days = _days_from_civil(year, month, day)
    seconds = days * _SECONDS_PER_DAY + hour * 3600 + minute * 60 + second
    return seconds * _NS_PER_SECOND + int(fraction.ljust(9, "0"))


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Year, month, day of ``days`` since 1970-01-01 (H. Hinnant's algorithm)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year, month, day


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (inverse of the above)."""
    y = year - 1 if month <= 2 else year
    era = y // 400
    yoe = y - era * 400
    mp = month - 3 if month > 2 else month + 9
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468
