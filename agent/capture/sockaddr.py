"""Decode raw ``struct sockaddr`` bytes copied by bpf/net.bpf.c. Pure."""

from __future__ import annotations

import ipaddress
import socket
import struct

from agent.capture.events import Endpoint
from agent.safetext import decode_host

_FAMILY = struct.Struct("<H")
_PORT = struct.Struct("!H")


def decode_sockaddr(raw: bytes, length: int) -> Endpoint | None:
    """Return the endpoint in the first ``length`` bytes of ``raw``.

    None when nothing valid was captured (length 0, or shorter than the
    family's fixed part). AF_UNIX paths: a leading NUL marks an abstract
    socket, shown as ``@name``; an unnamed socket has address ``""``.
    """
    data = raw[: max(0, min(length, len(raw)))]
    if len(data) < 2:
        return None
    (family,) = _FAMILY.unpack_from(data)
    if family == socket.AF_INET:
        if len(data) < 8:
            return None
        (port,) = _PORT.unpack_from(data, 2)
        return Endpoint("ipv4", str(ipaddress.IPv4Address(data[4:8])), port)
    if family == socket.AF_INET6:
        if len(data) < 24:
            return None
        (port,) = _PORT.unpack_from(data, 2)
        addr = ipaddress.IPv6Address(data[8:24])
        text = str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)
        family_name = "ipv4" if addr.ipv4_mapped else "ipv6"
        return Endpoint(family_name, text, port)
    if family == socket.AF_UNIX:
        path = data[2:]
        if not path:
            return Endpoint("unix", "")
        if path[0] == 0:
            return Endpoint("unix", "@" + decode_host(path[1:].rstrip(b"\0")))
        return Endpoint("unix", decode_host(path.split(b"\0", 1)[0]))
    return Endpoint("other", f"family={family}")
