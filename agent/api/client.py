"""The client side of the local API: sans-I/O framing plus a small blocking edge.

:class:`ResponseParser` reads one response head and its body (framed by
Content-Length, or running until the connection closes, as the SSE stream
does); :class:`SseParser` turns a byte stream into events by the WHATWG
rules (CR, LF or CRLF line ends; ``data`` lines joined with LF; comments
ignored; ``id`` remembered). Both are pure and take bytes split anywhere.
:func:`fetch` and :func:`stream` do the socket I/O for the CLI.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator, Mapping
from urllib.parse import quote

import msgspec

__all__ = [
    "ApiResponseError",
    "Response",
    "ResponseParser",
    "SseMessage",
    "SseParser",
    "fetch",
    "request_bytes",
    "stream",
]

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9]{2}) [^\r\n]*")
_MAX_HEAD = 65536


class ApiResponseError(ValueError):
    """The daemon's answer is not HTTP as expected (a garbled or foreign server)."""


class Response(msgspec.Struct):
    """A response head, and its body once complete."""

    status: int
    headers: dict[str, str]
    body: bytes = b""


class SseMessage(msgspec.Struct, frozen=True):
    """One dispatched SSE event (``event`` is "message" when none was named)."""

    id: str | None
    event: str
    data: str


def request_bytes(
    path: str,
    query: Mapping[str, str | int] | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """A GET for ``path`` on the local socket; query values percent-encoded."""
    target = path
    if query:
        target += "?" + "&".join(f"{quote(k)}={quote(str(v), safe='')}" for k, v in query.items())
    lines = [f"GET {target} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class ResponseParser:
    """Feed bytes; :attr:`response` is set once the head is in. With a
    Content-Length, :attr:`complete` turns True when the body is in; without
    one, body bytes are handed out by :meth:`take_body` as they arrive."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.response: Response | None = None
        self._length: int | None = None

    @property
    def framed(self) -> bool:
        """The head is in and gave a Content-Length."""
        return self._length is not None

    @property
    def complete(self) -> bool:
        return (
            self.response is not None
            and self._length is not None
            and len(self.response.body) >= self._length
        )

    def feed(self, data: bytes) -> None:
        self._buf += data
        if self.response is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > _MAX_HEAD:
                    raise ApiResponseError("response head too large")
                return
            self.response = _parse_head(bytes(self._buf[:end]))
            del self._buf[: end + 4]
            length = self.response.headers.get("content-length")
            if length is not None:
                if not length.isdigit():
                    raise ApiResponseError(f"bad Content-Length {length!r}")
                self._length = int(length)
        if self._length is not None:
            self.response.body += bytes(self._buf[: self._length - len(self.response.body)])
            self._buf.clear()

    def take_body(self) -> bytes:
        """Body bytes received so far and not yet taken (responses without a length)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data


def _parse_head(head: bytes) -> Response:
    lines = head.split(b"\r\n")
    found = _STATUS_LINE.fullmatch(lines[0])
    if found is None:
        raise ApiResponseError(f"not an HTTP response: {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ApiResponseError(f"bad header line {line[:60]!r}")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return Response(status=int(found.group(1)), headers=headers)


class SseParser:
    """Incremental Server-Sent Events parsing (WHATWG HTML, "Server-sent events")."""

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.last_event_id: str | None = None

    def feed(self, chunk: bytes) -> list[SseMessage]:
        out: list[SseMessage] = []
        buf = self._pending + chunk
        start = 0
        while True:
            match = re.compile(rb"\r\n|\r|\n").search(buf, start)
            if match is None:
                break
            if match.group() == b"\r" and match.end() == len(buf):
                break  # maybe the CR of a CRLF split across chunks: wait for more
            line = buf[start : match.start()].decode("utf-8", "replace")
            start = match.end()
            message = self._line(line)
            if message is not None:
                out.append(message)
        self._pending = buf[start:]
        return out

    def _line(self, line: str) -> SseMessage | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            message = SseMessage(id=self._id, event=self._event or "message",
                                 data="\n".join(self._data))  # fmt: skip
            self._data, self._event = [], ""
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = self.last_event_id = value
        return None


def _connect(socket_path: str, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
    except BaseException:
        sock.close()
        raise
    return sock


def fetch(
    socket_path: str,
    path: str,
    query: Mapping[str, str | int] | None = None,
    *,
    timeout: float = 30.0,
) -> Response:
    """One request and its whole response. Raises OSError, ApiResponseError."""
    with _connect(socket_path, timeout) as sock:
        sock.sendall(request_bytes(path, query))
        parser = ResponseParser()
        while not parser.complete:
            data = sock.recv(65536)
            if not data:
                break
            parser.feed(data)
        if parser.response is None:
            raise ApiResponseError("the daemon closed the connection without answering")
        if not parser.framed:  # no length: the body ran to the close
            parser.response.body += parser.take_body()
        elif not parser.complete:
            raise ApiResponseError("the response ended early")
        return parser.response


def stream(
    socket_path: str, path: str, headers: Mapping[str, str] | None = None
) -> Iterator[SseMessage | Response]:
    """The response head first (a :class:`Response`; its body set if it is
    an error), then each event until the daemon closes the stream."""
    with _connect(socket_path, 30.0) as sock:
        sock.sendall(request_bytes(path, headers=headers))
        parser, events = ResponseParser(), SseParser()
        while parser.response is None:
            data = sock.recv(65536)
            if not data:
                raise ApiResponseError("the daemon closed the connection without answering")
            parser.feed(data)
        response = parser.response
        if response.status != 200:
            while not parser.complete and (data := sock.recv(65536)):
                parser.feed(data)
            yield response
            return
        yield response
        sock.settimeout(None)  # a quiet stream is not an error: keep-alives come every 15 s
        pending = parser.take_body()
        while True:
            yield from events.feed(pending)
            pending = sock.recv(65536)
            if not pending:
                return
