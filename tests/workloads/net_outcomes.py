"""UDP sends and non-blocking TCP connects whose outcome the kernel decides.

Run with Debian's python3: ``python3 net_outcomes.py FACTS.json DIR``. It
sends UDP datagrams every way there is (sendto to 127.0.0.1 and ::1,
sendmsg, a sendmmsg of three messages to two ports, send() on a connected
socket), sends on sockets that are not UDP (a UNIX datagram socket, a TCP
stream: none of them may be recorded as UDP), makes one non-blocking
connect that is accepted and one that is refused, waits for each outcome
(SO_ERROR), and writes what it did to FACTS.json.
"""

import ctypes
import json
import select
import socket
import struct
import sys

facts_path, work = sys.argv[1], sys.argv[2]


def free_udp_port(family: int, host: str) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


facts: dict = {"pid": __import__("os").getpid()}
v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
ports = {
    name: free_udp_port(socket.AF_INET, "127.0.0.1")
    for name in ("sendto", "sendmsg", "mm1", "mm2", "connected")
}
ports["sendto6"] = free_udp_port(socket.AF_INET6, "::1")
facts["ports"] = ports
facts["sendto_bytes"] = v4.sendto(b"tracehound-v4", ("127.0.0.1", ports["sendto"]))
v6.sendto(b"tracehound-v6", ("::1", ports["sendto6"]))
v4.sendmsg([b"tracehound-msg"], [], 0, ("127.0.0.1", ports["sendmsg"]))

# sendmmsg: two messages to mm1, then one to mm2 (no Python wrapper: libc).
libc = ctypes.CDLL(None, use_errno=True)


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", MsgHdr), ("len", ctypes.c_uint32)]


def sockaddr_in(port: int) -> ctypes.Array:
    raw = (
        struct.pack("<H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton("127.0.0.1")
    )
    return ctypes.create_string_buffer(raw + b"\0" * 8, 16)


names = [sockaddr_in(ports["mm1"]), sockaddr_in(ports["mm1"]), sockaddr_in(ports["mm2"])]
payload = ctypes.create_string_buffer(b"mm")
iov = IoVec(ctypes.cast(payload, ctypes.c_void_p), 2)
msgs = (MMsgHdr * 3)()
for i, name in enumerate(names):
    msgs[i].hdr.name = ctypes.cast(name, ctypes.c_void_p)
    msgs[i].hdr.namelen = 16
    msgs[i].hdr.iov = ctypes.cast(ctypes.pointer(iov), ctypes.c_void_p)
    msgs[i].hdr.iovlen = 1
facts["sendmmsg"] = libc.sendmmsg(v4.fileno(), msgs, 3, 0)

# A connected UDP socket: connect once, then send() twice (no address).
connected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
receiver.bind(("127.0.0.1", 0))
ports["connected"] = receiver.getsockname()[1]
connected.connect(("127.0.0.1", ports["connected"]))
connected.send(b"one")
connected.send(b"two")

# Not UDP: a UNIX datagram to a bound path, and sendto on a TCP stream.
unix_path = f"{work}/dgram.sock"
unix_rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
unix_rx.bind(unix_path)
unix_tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
unix_tx.sendto(b"unix", unix_path)
facts["unix"] = unix_path

# Non-blocking TCP connects: one to a listener, one to a closed port.
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
ports["accepted"] = listener.getsockname()[1]
closed = socket.socket()
closed.bind(("127.0.0.1", 0))
ports["refused"] = closed.getsockname()[1]
closed.close()
outcomes = {}
for name in ("accepted", "refused"):
    tcp = socket.socket()
    tcp.setblocking(False)
    returned = tcp.connect_ex(("127.0.0.1", ports[name]))
    select.select([], [tcp], [], 10)
    outcomes[name] = {
        "returned": returned,
        "so_error": tcp.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR),
        "fd": tcp.fileno(),
    }
    if name == "accepted":
        peer, _ = listener.accept()
        tcp.sendto(b"tcp stream, not a datagram", ("127.0.0.1", ports["accepted"]))
        peer.close()
    tcp.close()
facts["outcomes"] = outcomes
with open(facts_path, "w") as out:
    json.dump(facts, out)
