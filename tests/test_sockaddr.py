"""decode_sockaddr: raw sockaddr bytes (as copied by bpf/net.bpf.c) to Endpoints."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.capture.events import Endpoint
from agent.capture.sockaddr import decode_sockaddr

BUF = 112  # TH_SOCKADDR_LEN: the kernel copies into a buffer this big


def pad(raw: bytes, fill: bytes = b"\0") -> bytes:
    return raw + fill * (BUF - len(raw))


def sin(ip: str, port: int) -> bytes:
    """struct sockaddr_in: family (host order), port (network order), addr, zero."""
    return (
        struct.pack("<H", socket.AF_INET)
        + struct.pack("!H", port)
        + socket.inet_aton(ip)
        + bytes(8)
    )


def sin6(ip: str, port: int, flowinfo: int = 0, scope_id: int = 0) -> bytes:
    return (
        struct.pack("<H", socket.AF_INET6)
        + struct.pack("!HI", port, flowinfo)
        + socket.inet_pton(socket.AF_INET6, ip)
        + struct.pack("<I", scope_id)
    )


def sun(path: bytes) -> bytes:
    return struct.pack("<H", socket.AF_UNIX) + path


# -- AF_INET ---------------------------------------------------------------


def test_ipv4() -> None:
    raw = sin("192.168.7.42", 8080)
    assert len(raw) == 16
    assert decode_sockaddr(pad(raw), 16) == Endpoint("ipv4", "192.168.7.42", 8080)


def test_ipv4_port_is_network_order() -> None:
    # 0x1F90 = 8080; read as little-endian it would be 36895.
    ep = decode_sockaddr(pad(sin("127.0.0.1", 0x1F90)), 16)
    assert ep is not None and ep.port == 8080
    ep = decode_sockaddr(pad(sin("0.0.0.0", 65535)), 16)
    assert ep == Endpoint("ipv4", "0.0.0.0", 65535)


def test_ipv4_needs_eight_bytes() -> None:
    raw = pad(sin("10.0.0.1", 53))
    assert decode_sockaddr(raw, 7) is None
    assert decode_sockaddr(raw, 8) == Endpoint("ipv4", "10.0.0.1", 53)


# -- AF_INET6 --------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "text"),
    [("::1", "::1"), ("2001:db8:0:0:0:0:0:1", "2001:db8::1"), ("fe80::1:2", "fe80::1:2")],
)
def test_ipv6(ip: str, text: str) -> None:
    raw = sin6(ip, 443, flowinfo=0xABCDE, scope_id=3)
    assert len(raw) == 28
    assert decode_sockaddr(pad(raw), 28) == Endpoint("ipv6", text, 443)


def test_ipv6_v4_mapped_is_shown_as_ipv4() -> None:
    raw = sin6("::ffff:10.1.2.3", 5432)
    assert decode_sockaddr(pad(raw), 28) == Endpoint("ipv4", "10.1.2.3", 5432)


def test_ipv6_needs_the_address() -> None:
    raw = pad(sin6("::1", 22))
    assert decode_sockaddr(raw, 23) is None
    # scope_id is not needed: 24 bytes hold family, port, flowinfo, address.
    assert decode_sockaddr(raw, 24) == Endpoint("ipv6", "::1", 22)


# -- AF_UNIX ---------------------------------------------------------------


def test_unix_path_with_nul() -> None:
    raw = sun(b"/run/app.sock\0")
    assert decode_sockaddr(pad(raw), len(raw)) == Endpoint("unix", "/run/app.sock", 0)


def test_unix_path_without_nul_is_cut_by_length() -> None:
    raw = sun(b"/run/app.sock")
    # Garbage after the valid length must not show.
    assert decode_sockaddr(pad(raw, b"Z"), len(raw)) == Endpoint("unix", "/run/app.sock")
    assert decode_sockaddr(pad(raw, b"Z"), len(raw) - 5) == Endpoint("unix", "/run/app")


def test_unix_abstract() -> None:
    raw = sun(b"\0my-abstract")
    assert decode_sockaddr(pad(raw, b"Z"), len(raw)) == Endpoint("unix", "@my-abstract")


def test_unix_abstract_trailing_nuls_dropped() -> None:
    raw = sun(b"\0name\0\0")
    assert decode_sockaddr(pad(raw), len(raw)) == Endpoint("unix", "@name")


def test_unix_unnamed() -> None:
    raw = sun(b"")
    assert decode_sockaddr(pad(raw, b"Z"), 2) == Endpoint("unix", "")


def test_unix_full_length_path() -> None:
    path = b"/" + b"s" * 107  # sun_path is 108 bytes
    raw = sun(path)
    assert len(raw) == 110
    assert decode_sockaddr(pad(raw), 110) == Endpoint("unix", path.decode())


# -- lengths and families --------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, -5])
def test_too_short_for_a_family(length: int) -> None:
    assert decode_sockaddr(pad(sin("1.2.3.4", 80)), length) is None


def test_length_beyond_buffer_is_clipped() -> None:
    raw = sin("1.2.3.4", 80)
    assert decode_sockaddr(raw, 1000) == Endpoint("ipv4", "1.2.3.4", 80)
    assert decode_sockaddr(raw[:7], 1000) is None


def test_unknown_family() -> None:
    raw = struct.pack("<H", socket.AF_PACKET) + bytes(18)
    ep = decode_sockaddr(pad(raw), 20)
    assert ep == Endpoint("other", f"family={socket.AF_PACKET}", 0)
    assert ep.render() == f"other:family={socket.AF_PACKET}"


def test_family_is_host_order() -> None:
    # AF_INET6 (10) read in network order would be 2560: "other".
    ep = decode_sockaddr(pad(sin6("::1", 1)), 28)
    assert ep is not None and ep.family == "ipv6"


@pytest.mark.parametrize(
    ("endpoint", "text"),
    [
        (Endpoint("ipv4", "10.0.0.1", 80), "10.0.0.1:80"),
        (Endpoint("ipv6", "::1", 443), "[::1]:443"),
        (Endpoint("unix", "/run/x"), "unix:/run/x"),
        (Endpoint("unix", "@abs"), "unix:@abs"),
    ],
)
def test_render(endpoint: Endpoint, text: str) -> None:
    assert endpoint.render() == text


# -- properties ------------------------------------------------------------


@given(st.ip_addresses(v=4), st.integers(0, 65535))
def test_any_ipv4_roundtrips(addr: ipaddress.IPv4Address, port: int) -> None:
    ep = decode_sockaddr(pad(sin(str(addr), port)), 16)
    assert ep is not None
    assert ep.family == "ipv4"
    assert ipaddress.ip_address(ep.address) == addr
    assert ep.port == port


@given(st.ip_addresses(v=6), st.integers(0, 65535))
def test_any_ipv6_roundtrips(addr: ipaddress.IPv6Address, port: int) -> None:
    ep = decode_sockaddr(pad(sin6(str(addr), port)), 28)
    assert ep is not None
    assert ep.port == port
    if addr.ipv4_mapped is not None:
        assert ep.family == "ipv4"
        assert ipaddress.ip_address(ep.address) == addr.ipv4_mapped
    else:
        assert ep.family == "ipv6"
        assert ipaddress.ip_address(ep.address) == addr


@given(st.binary(max_size=BUF), st.integers(-4, 200))
def test_never_raises(raw: bytes, length: int) -> None:
    ep = decode_sockaddr(raw, length)
    assert ep is None or isinstance(ep, Endpoint)
    if min(length, len(raw)) < 2:
        assert ep is None
