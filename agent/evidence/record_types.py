"""Every evidence record type tracehound writes, and the payload each one holds.

One place for the names (``dev.tracehound.file.open.v1``...) the mapper
stamps on records and readers dispatch on, and for which payload Struct
(:mod:`agent.evidence.payloads`) a record of each type carries.
"""

from __future__ import annotations

from typing import Final

import msgspec

from agent.capture.kinds import FILE_OPERATIONS, NET_OPERATIONS
from agent.evidence.payloads import (
    AnchorData,
    AppData,
    CallData,
    ConfigData,
    DegradedData,
    ExecData,
    ExitData,
    FileData,
    ForkData,
    LossData,
    NetData,
    Payload,
    RecoveredData,
    SeenData,
    StartData,
    StopData,
    SyscallsData,
    UringData,
)
from agent.evidence.types import TYPE_PREFIX

__all__ = [
    "CALL_TYPES",
    "CAPTURE_TYPES",
    "PAYLOAD_TYPES",
    "TYPE_ANCHOR",
    "TYPE_APP",
    "TYPE_CONFIG",
    "TYPE_DEGRADED",
    "TYPE_EXEC",
    "TYPE_EXIT",
    "TYPE_FORK",
    "TYPE_LOSS",
    "TYPE_RECOVERED",
    "TYPE_SEEN",
    "TYPE_START",
    "TYPE_STOP",
    "TYPE_SYSCALLS",
    "TYPE_URING",
    "call_type",
    "decode_payload",
    "file_type",
    "net_type",
]

TYPE_EXEC: Final = TYPE_PREFIX + "process.exec.v1"
TYPE_FORK: Final = TYPE_PREFIX + "process.fork.v1"
TYPE_EXIT: Final = TYPE_PREFIX + "process.exit.v1"
TYPE_SEEN: Final = TYPE_PREFIX + "process.seen.v1"
TYPE_SYSCALLS: Final = TYPE_PREFIX + "process.syscalls.v1"
#: One io_uring request's completion (any opcode: the op is in the data).
TYPE_URING: Final = TYPE_PREFIX + "uring.op.v1"
TYPE_ANCHOR: Final = TYPE_PREFIX + "capture.anchor.v1"
TYPE_LOSS: Final = TYPE_PREFIX + "capture.loss.v1"
TYPE_DEGRADED: Final = TYPE_PREFIX + "capture.degraded.v1"
TYPE_START: Final = TYPE_PREFIX + "capture.start.v1"
TYPE_STOP: Final = TYPE_PREFIX + "capture.stop.v1"
TYPE_CONFIG: Final = TYPE_PREFIX + "capture.config.v1"
TYPE_RECOVERED: Final = TYPE_PREFIX + "capture.recovered.v1"
#: An event a local producer appended (POST /v1/events, tracehound mark).
TYPE_APP: Final = TYPE_PREFIX + "app.event.v1"

CAPTURE_TYPES: Final = frozenset(
    {TYPE_ANCHOR, TYPE_LOSS, TYPE_DEGRADED, TYPE_START, TYPE_STOP, TYPE_CONFIG, TYPE_RECOVERED}
)
"""The records about the capture itself rather than about what it saw."""

# File and socket operations with a type of their own (agent.capture.kinds
# names them once); anything else is file.other.v1 / network.other.v1.
_FILE_TYPES: Final = {op: f"{TYPE_PREFIX}file.{op}.v1" for op in FILE_OPERATIONS}
_NET_TYPES: Final = {op: f"{TYPE_PREFIX}network.{op}.v1" for op in NET_OPERATIONS}
TYPE_FILE_OTHER: Final = TYPE_PREFIX + "file.other.v1"
TYPE_NET_OTHER: Final = TYPE_PREFIX + "network.other.v1"


#: The record type of each family of security-relevant calls (agent.capture.calls).
CALL_TYPES: Final[dict[str, str]] = {
    "credentials": TYPE_PREFIX + "process.credentials.v1",
    "ptrace": TYPE_PREFIX + "process.ptrace.v1",
    "signal": TYPE_PREFIX + "process.signal.v1",
    "namespace": TYPE_PREFIX + "process.namespace.v1",
    "memfd": TYPE_PREFIX + "process.memfd.v1",
    "module": TYPE_PREFIX + "kernel.module.v1",
    "bpf": TYPE_PREFIX + "kernel.bpf.v1",
    "mount": TYPE_PREFIX + "fs.mount.v1",
    "other": TYPE_PREFIX + "process.call.v1",
}


def call_type(family: str) -> str:
    """The record type of a family of calls."""
    return CALL_TYPES.get(family, CALL_TYPES["other"])


def file_type(op: str) -> str:
    """The record type of a file operation."""
    return _FILE_TYPES.get(op, TYPE_FILE_OTHER)


def net_type(op: str) -> str:
    """The record type of a socket operation."""
    return _NET_TYPES.get(op, TYPE_NET_OTHER)


PAYLOAD_TYPES: Final[dict[str, type[Payload]]] = {
    TYPE_EXEC: ExecData,
    TYPE_FORK: ForkData,
    TYPE_EXIT: ExitData,
    TYPE_SEEN: SeenData,
    TYPE_SYSCALLS: SyscallsData,
    TYPE_URING: UringData,
    TYPE_ANCHOR: AnchorData,
    TYPE_LOSS: LossData,
    TYPE_DEGRADED: DegradedData,
    TYPE_START: StartData,
    TYPE_STOP: StopData,
    TYPE_CONFIG: ConfigData,
    TYPE_RECOVERED: RecoveredData,
    TYPE_APP: AppData,
    TYPE_FILE_OTHER: FileData,
    TYPE_NET_OTHER: NetData,
    **dict.fromkeys(_FILE_TYPES.values(), FileData),
    **dict.fromkeys(_NET_TYPES.values(), NetData),
    **dict.fromkeys(CALL_TYPES.values(), CallData),
}
"""Record type to the payload Struct its ``data`` holds."""


def decode_payload(record_type: str, data: bytes | msgspec.Raw) -> Payload:
    """The typed payload of a record of ``record_type`` from its ``data`` JSON.

    Raises :class:`KeyError` for a type tracehound does not write and
    :class:`msgspec.ValidationError` for data that is not that type's.
    """
    return msgspec.json.decode(data, type=PAYLOAD_TYPES[record_type])
