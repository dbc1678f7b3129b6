"""The local API's client side: sans-I/O framing plus a small blocking edge.

Pure (bytes in, events out, in the style of h11): :func:`request_bytes`,
:class:`ResponseParser` (strict: whatever is not a well-formed HTTP/1.x
response raises :class:`ResponseError`, a ValueError) and :class:`SseParser`
(WHATWG event-stream rules). The edge, :func:`fetch` and :func:`stream`, makes
one request per ``AF_UNIX`` connection and raises :class:`ConnectError` when
the socket cannot be reached, ``OSError`` (TimeoutError too) when the
connection fails midway, :class:`ApiError` for an error status.
"""

from __future__ import annotations

import codecs
import contextlib
import re
import socket
import time
from collections.abc import Generator, Iterable, Mapping
from types import MappingProxyType
from urllib.parse import quote

import msgspec

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_PATH = re.compile(r"/[\x21\x22\x24-\x3e\x40-\x7e]*")  # visible ASCII but # and ?
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9]{2})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_LINE_END = re.compile(r"\r\n?|\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_NO_QUERY: Mapping[str, str | int] = MappingProxyType({})


def request_bytes(
    path: str, query: Mapping[str, str | int] = _NO_QUERY, headers: Iterable[tuple[str, str]] = ()
) -> bytes:
    """One ``GET path?query`` with ``Host: localhost`` and ``Connection: close``.

    Query names and values are percent-encoded (space is ``%20`` and ``+``
    is ``%2B``: the server reads ``+`` as a space). Header values come from
    the command line, so control bytes are refused: a CR or LF would inject
    header lines. ValueError for that, a bad header name, or a path that is
    not ``/`` and visible ASCII without ``?`` or ``#``.
    """
    if _PATH.fullmatch(path) is None:
        raise ValueError(f"request path must be '/' and visible ASCII without ? or #: {path!r}")
    pairs = [f"{quote(k, safe='')}={quote(str(v), safe='')}" for k, v in query.items()]
    lines = [f"GET {path}{'?' if pairs else ''}{'&'.join(pairs)} HTTP/1.1", "Host: localhost"]
    lines.append("Connection: close")
    for name, value in headers:
        if _TOKEN.fullmatch(name) is None or _FIELD_VALUE.fullmatch(value) is None:
            raise ValueError(f"header {name!r} has a bad name or control bytes in {value!r}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ResponseError(ValueError):
    """The bytes received are not a response (or event stream) this client reads."""


class ResponseHead(msgspec.Struct, frozen=True):
    """Status line and headers (names lower-cased, in the order sent)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        return next((v for k, v in self.headers if k == name.lower()), None)


class Response(ResponseHead, frozen=True):
    """A complete response: the head and the whole body."""

    body: bytes


class ResponseParser:
    """Incremental, strict parser for the one response on a connection.

    :meth:`feed` returns what the new bytes complete: a body framed by
    Content-Length comes out whole, as one :class:`Response`; without one
    (the SSE stream, delimited by the close) a :class:`ResponseHead`, then
    ``bytes`` chunks as they arrive. Refused: not HTTP/1.x, a bare CR or LF,
    a malformed or folded header, Transfer-Encoding (never decoded), bad or
    conflicting lengths, an interim (1xx) response, a head over
    ``max_head_bytes``, a body over ``max_body_bytes`` (None: unbounded, for
    streams), bytes after the end. After one error the parser stays failed.
    """

    def __init__(self, max_head_bytes: int = 65536, max_body_bytes: int | None = 1 << 28) -> None:
        self.max_head_bytes, self.max_body_bytes = max_head_bytes, max_body_bytes
        self._buf = bytearray()
        self._head: ResponseHead | None = None
        self._length: int | None = None  # with a head: None means "until the close"
        self._received = 0
        self._done = False
        self._error: ResponseError | None = None

    def feed(self, data: bytes) -> list[ResponseHead | bytes]:
        try:
            if self._error is not None:
                raise self._error
            return self._feed(data)
        except ResponseError as err:
            self._error = err
            raise

    def feed_eof(self) -> None:
        """The peer closed: fine after a whole response or during a stream."""
        if self._error is None and not self._done and self._head is None:
            self._error = ResponseError("connection closed before a complete response head")
        elif self._error is None and not self._done and self._length is not None:
            self._error = ResponseError(
                f"connection closed after {len(self._buf)} of {self._length} body bytes"
            )
        if self._error is not None:
            raise self._error

    def _feed(self, data: bytes) -> list[ResponseHead | bytes]:
        if self._done:
            if data:
                raise ResponseError(f"{len(data)} bytes after the end of the response")
            return []
        if self._head is not None and self._length is None:
            return self._chunk(data)
        self._buf += data
        if self._head is None:
            if not self._buf.startswith(b"HTTP/"[: len(self._buf)]):
                raise ResponseError(f"not an HTTP response: it starts {bytes(self._buf[:20])!r}")
            end = self._buf.find(b"\r\n\r\n")
            if -1 < end <= self.max_head_bytes - 4:
                self._head, self._length = self._parse_head(bytes(self._buf[:end]))
                del self._buf[: end + 4]
            elif len(self._buf) > self.max_head_bytes or end != -1:
                raise ResponseError(f"response head larger than {self.max_head_bytes} bytes")
            else:
                return []
            if self._length is None:
                rest = bytes(self._buf)
                self._buf.clear()
                return [self._head, *self._chunk(rest)]
        if self._length is None or len(self._buf) < self._length:
            return []
        if len(self._buf) > self._length:
            raise ResponseError(f"{len(self._buf) - self._length} bytes after the response body")
        self._done, head = True, self._head
        return [Response(head.status, head.reason, head.headers, bytes(self._buf))]

    def _chunk(self, data: bytes) -> list[ResponseHead | bytes]:
        self._received += len(data)
        if self.max_body_bytes is not None and self._received > self.max_body_bytes:
            raise ResponseError(f"response body larger than {self.max_body_bytes} bytes")
        return [data] if data else []

    def _parse_head(self, head: bytes) -> tuple[ResponseHead, int | None]:
        if b"\r" in head.replace(b"\r\n", b"") or b"\n" in head.replace(b"\r\n", b""):
            raise ResponseError("bare CR or LF in the response head")
        status_line, *fields = head.split(b"\r\n")
        match = _STATUS_LINE.fullmatch(status_line)
        if match is None or int(match.group(1)) < 200:
            raise ResponseError(f"not a final HTTP/1.x status line: {status_line[:60]!r}")
        headers: list[tuple[str, str]] = []
        for line in fields:
            name, colon, value = line.decode("latin-1").partition(":")
            value = value.strip(" \t")
            if not colon or _TOKEN.fullmatch(name) is None or not _FIELD_VALUE.fullmatch(value):
                raise ResponseError(f"malformed header field {line[:60]!r}")
            headers.append((name.lower(), value))
        if any(name == "transfer-encoding" for name, _ in headers):
            raise ResponseError("Transfer-Encoding is not supported by this client")
        lengths = {value for name, value in headers if name == "content-length"}
        if len(lengths) > 1 or not all(v.isascii() and v.isdigit() for v in lengths):
            raise ResponseError(f"bad Content-Length {sorted(lengths)}")
        status = int(match.group(1))
        length = 0 if status in (204, 304) else int(lengths.pop()) if lengths else None
        limit = self.max_body_bytes
        if length is not None and limit is not None and length > limit:
            raise ResponseError(f"a {length}-byte body is over the client's limit")
        reason = (match.group(2) or b"").decode("latin-1")
        return ResponseHead(status, reason, tuple(headers)), length


class SseMessage(msgspec.Struct, frozen=True):
    """One event. ``id`` is *this* event's id field, None if it had none (an
    ``overflow`` notice); ``event`` defaults to "message"; ``data`` lines are
    joined with LF."""

    id: str | None
    event: str
    data: str


class SseParser:
    """Incremental WHATWG event-stream parser: bytes in, events out.

    Bytes may be split anywhere: UTF-8 is decoded incrementally (invalid
    bytes become U+FFFD, as the standard says), and a CR ending one feed ends
    its line at once while a LF opening the next is skipped, so no event
    waits for bytes that may never come. :attr:`last_event_id` is the
    standard's persistent one, what to send back as Last-Event-ID. An event
    left open when the stream ends is not dispatched. An unfinished line plus
    the event's data over ``max_chars`` raises ResponseError: a peer that
    never ends one must not take all the memory.
    """

    def __init__(self, last_event_id: str = "", max_chars: int = 1 << 23) -> None:
        self.last_event_id, self.max_chars = last_event_id, max_chars
        self.retry_ms: int | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._started = self._skip_lf = False
        self._pending: list[str] = []  # the unfinished line, in pieces
        self._pending_chars = self._data_chars = 0
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._id_buffer = last_event_id

    def feed(self, data: bytes) -> list[SseMessage]:
        text = self._decoder.decode(data)
        if text and not self._started:
            self._started, text = True, text.removeprefix("\ufeff")
        if text:
            text, self._skip_lf = (text.removeprefix("\n") if self._skip_lf else text), False
        out: list[SseMessage] = []
        pos = 0
        while (match := _LINE_END.search(text, pos)) is not None:
            line = "".join([*self._pending, text[pos : match.start()]])
            self._pending, self._pending_chars, pos = [], 0, match.end()
            self._skip_lf = match.group() == "\r" and pos == len(text)
            self._line(line, out)
        if pos < len(text):
            self._pending.append(text[pos:])
            self._pending_chars += len(text) - pos
        if self._pending_chars + self._data_chars > self.max_chars:
            raise ResponseError(f"an SSE line or event over {self.max_chars} characters")
        return out

    def _line(self, line: str, out: list[SseMessage]) -> None:
        if not line:  # dispatch
            self.last_event_id = self._id_buffer
            if self._data:
                out.append(SseMessage(self._id, self._event or "message", "\n".join(self._data)))
            self._data, self._data_chars, self._event, self._id = [], 0, "", None
        elif not line.startswith(":"):  # else a comment
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                self._data.append(value)
                self._data_chars += len(value) + 1
            elif field == "event":
                self._event = value
            elif field == "id" and "\x00" not in value:
                self._id = self._id_buffer = value
            elif field == "retry" and value.isascii() and value.isdigit():
                self.retry_ms = int(value)


class ConnectError(Exception):
    """The socket could not be reached; ``cause`` says why (ENOENT, EACCES...)."""

    def __init__(self, socket_path: str, cause: OSError) -> None:
        super().__init__(f"cannot connect to {socket_path}: {cause.strerror or cause}")
        self.socket_path, self.cause = socket_path, cause


class ApiError(Exception):
    """An error status; ``str()`` is ``"403: <detail>"``, on one line."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.reason, self.detail = status, reason, detail

    @classmethod
    def from_response(cls, response: Response) -> ApiError:
        """From the API's JSON error body, or else a cleaned-up start of the body."""
        reason, detail = response.reason, ""
        with contextlib.suppress(msgspec.DecodeError):
            body = msgspec.json.decode(response.body)
            if isinstance(body, dict):
                reason, detail = str(body.get("error") or reason), str(body.get("detail") or "")
        detail = detail or response.body[:200].decode("utf-8", "replace")
        return cls(response.status, reason, _CONTROL.sub(" ", detail).strip() or reason)


def _connect(socket_path: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(socket_path)
    except OSError as err:
        sock.close()
        raise ConnectError(socket_path, err) from err
    return sock


def _exchange(
    sock: socket.socket, request: bytes, parser: ResponseParser, deadline: float
) -> tuple[ResponseHead, list[bytes]]:
    """Send ``request``; read until a whole Response, or a head (and what came with it)."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(request)  # refused early (403, 503) and closed: its answer may be there
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        data = sock.recv(65536)
        if not data:
            parser.feed_eof()  # raises: no head yet
        if events := parser.feed(data):
            head = events[0]
            assert isinstance(head, ResponseHead)
            return head, [e for e in events[1:] if isinstance(e, bytes)]


def _to_close(sock: socket.socket, parser: ResponseParser, head: ResponseHead,
              chunks: list[bytes], deadline: float) -> Response:  # fmt: skip
    """The rest of a close-delimited body (bounded by ``parser.max_body_bytes``)."""
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        if not (data := sock.recv(65536)):
            parser.feed_eof()
            return Response(head.status, head.reason, head.headers, b"".join(chunks))
        chunks += [e for e in parser.feed(data) if isinstance(e, bytes)]


def fetch(
    socket_path: str, path: str, query: Mapping[str, str | int] = _NO_QUERY, timeout: float = 30.0
) -> Response:
    """GET ``path``; the whole response, whatever its status.

    ``timeout`` bounds the whole exchange (TimeoutError past it), not each
    read, so a daemon trickling bytes cannot stretch it.
    """
    deadline = time.monotonic() + timeout
    parser = ResponseParser()
    with _connect(socket_path, timeout) as sock:
        head, chunks = _exchange(sock, request_bytes(path, query), parser, deadline)
        if isinstance(head, Response):
            return head
        return _to_close(sock, parser, head, chunks, deadline)


def post(socket_path: str, path: str, body: bytes, timeout: float = 30.0) -> Response:
    """POST ``body`` (JSON) to ``path``; the whole response, whatever its status.

    The same edge as :func:`fetch` (and its errors); the request is framed
    by :func:`request_bytes`, with the body's type and length added.
    """
    head = request_bytes(
        path, headers=[("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    request = b"POST" + head.removeprefix(b"GET") + body
    deadline = time.monotonic() + timeout
    parser = ResponseParser()
    with _connect(socket_path, timeout) as sock:
        response, chunks = _exchange(sock, request, parser, deadline)
        if isinstance(response, Response):
            return response
        return _to_close(sock, parser, response, chunks, deadline)


def stream(
    socket_path: str,
    path: str = "/v1/stream",
    headers: Iterable[tuple[str, str]] = (),
    timeout: float = 30.0,
) -> Generator[SseMessage, None, None]:
    """GET an SSE ``path``; yield its events until the server closes.

    A generator: it connects on the first ``next()``; closing it closes the
    socket. ``timeout`` bounds connecting and the head; a quiet stream is
    then waited on as long as it lasts. ApiError for an error status,
    ResponseError for a 200 that is not ``text/event-stream``.
    """
    request = request_bytes(path, headers=headers)
    deadline = time.monotonic() + timeout
    parser, events = ResponseParser(max_body_bytes=None), SseParser()
    with _connect(socket_path, timeout) as sock:
        head, chunks = _exchange(sock, request, parser, deadline)
        if head.status != 200:
            parser.max_body_bytes = 65536  # an error's body, however delimited, is short
            if not isinstance(head, Response):
                head = _to_close(sock, parser, head, chunks, deadline)
            raise ApiError.from_response(head)
        kind = head.header("content-type") or "no Content-Type"
        if isinstance(head, Response) or kind.split(";")[0].strip() != "text/event-stream":
            raise ResponseError(f"expected an event stream, got {kind}")
        sock.settimeout(None)
        for chunk in chunks:
            yield from events.feed(chunk)
        while data := sock.recv(65536):
            for item in parser.feed(data):
                yield from events.feed(item) if isinstance(item, bytes) else ()
        parser.feed_eof()
