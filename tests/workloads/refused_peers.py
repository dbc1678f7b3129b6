"""A crowd of API peers the daemon must refuse, run as an unprivileged user.

It opens SILENT connections that send nothing and TALKING ones that send a
request, keeps them all open, and says ``open`` on stdout. When a line comes
on stdin it reads each connection's answer until the server closes it (or
1 s after ``open``, so an answer that waits for a timeout does not count),
prints them as one JSON list of ``{"status", "detail"}`` (status 0: none
came), then exits. Run with Debian's python3 under setpriv:
    python3 refused_peers.py SOCKET SILENT TALKING
"""

import contextlib
import json
import socket
import sys
import time

path, silent, talking = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
peers = []
for n in range(silent + talking):
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    peer.connect(path)
    if n >= silent:
        # Already answered and closed (BrokenPipe): the answer waits to be read.
        with contextlib.suppress(BrokenPipeError):
            peer.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    peers.append(peer)
opened = time.monotonic()
print("open", flush=True)
sys.stdin.readline()

answers = []
for peer in peers:
    data = b""
    try:
        while True:
            peer.settimeout(max(opened + 1.0 - time.monotonic(), 0.001))
            chunk = peer.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0
    try:
        detail = json.loads(body)["detail"] if status else ""
    except (ValueError, KeyError):
        detail = body.decode("latin-1")
    answers.append({"status": status, "detail": detail})
print(json.dumps(answers), flush=True)
