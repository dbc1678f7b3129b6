"""The local API's client side: the standard library's HTTP over a UNIX socket.

Requests and responses are :mod:`http.client`'s (its status-line, header
and body framing, chunked included), on an ``AF_UNIX`` connection
(:class:`UnixHTTPConnection`); what stays here is the query encoding,
the checks on what the command line puts in a request, the bounds, and the
small :class:`SseParser` (WHATWG event-stream rules). :func:`fetch` and
:func:`stream` make one request per connection and raise
:class:`ConnectError` when the socket cannot be reached, ``OSError``
(TimeoutError too) when the connection fails midway, :class:`ApiError`
for an error status, :class:`ResponseError` (a ValueError) for bytes that
are not an HTTP/1.x response this client reads.
"""

from __future__ import annotations

import codecs
import contextlib
import http.client
import re
import socket
import time
from collections.abc import Generator, Iterable, Mapping
from types import MappingProxyType
from typing import Final
from urllib.parse import quote

import msgspec

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_PATH = re.compile(r"/[\x21\x22\x24-\x3e\x40-\x7e]*")  # visible ASCII but # and ?
_LINE_END = re.compile(r"\r\n?|\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_NO_QUERY: Mapping[str, str | int] = MappingProxyType({})
_CHUNK: Final = 65536
#: The largest body :func:`fetch` takes (a snapshot of a busy host is big,
#: but not this big); an error's body in :func:`stream` is cut at 64 KiB.
MAX_BODY_BYTES: Final = 1 << 28


def request_target(path: str, query: Mapping[str, str | int] = _NO_QUERY) -> str:
    """``path?query``, names and values percent-encoded (space is ``%20`` and
    ``+`` is ``%2B``: the server reads ``+`` as a space). ValueError for a
    path that is not ``/`` and visible ASCII without ``?`` or ``#``."""
    if _PATH.fullmatch(path) is None:
        raise ValueError(f"request path must be '/' and visible ASCII without ? or #: {path!r}")
    pairs = [f"{quote(k, safe='')}={quote(str(v), safe='')}" for k, v in query.items()]
    return f"{path}{'?' if pairs else ''}{'&'.join(pairs)}"


def check_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Header fields from the command line, refused (ValueError) for a bad
    name or a control byte in the value: a CR or LF would inject lines."""
    checked = list(headers)
    for name, value in checked:
        if _TOKEN.fullmatch(name) is None or _FIELD_VALUE.fullmatch(value) is None:
            raise ValueError(f"header {name!r} has a bad name or control bytes in {value!r}")
    return checked


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


class _DeadlineSocket(socket.socket):
    """An AF_UNIX socket whose every read waits at most until :attr:`deadline`
    (None: as long as it takes), so one deadline bounds a whole exchange and
    a peer trickling a byte at a time cannot stretch it."""

    deadline: float | None = None

    def recv_into(self, buffer: memoryview | bytearray, nbytes: int = 0, flags: int = 0) -> int:  # type: ignore[override]
        if self.deadline is None:
            self.settimeout(None)
        else:
            self.settimeout(max(self.deadline - time.monotonic(), 0.001))
        return super().recv_into(buffer, nbytes, flags)


class UnixHTTPConnection(http.client.HTTPConnection):
    """:class:`http.client.HTTPConnection` to a UNIX socket path (``Host: localhost``)."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = _DeadlineSocket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except OSError as err:
            sock.close()
            raise ConnectError(self.socket_path, err) from err
        sock.deadline = time.monotonic() + float(self.timeout or 30.0)
        self.sock = sock

    def set_deadline(self, deadline: float | None) -> None:
        """Bound every later read of this connection by ``deadline`` (None: unbounded)."""
        if isinstance(self.sock, _DeadlineSocket):
            self.sock.deadline = deadline


def open_response(
    socket_path: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    timeout: float,
    *,
    json_body: bytes | None = None,
) -> tuple[UnixHTTPConnection, http.client.HTTPResponse]:
    """Send ``GET target`` (see :func:`request_target`), or ``POST`` with
    ``json_body``, and read the response's head, by ``timeout``; the caller
    reads the body (bounded by the same deadline until
    :meth:`UnixHTTPConnection.set_deadline`) and closes the connection.
    ConnectError, ResponseError, OSError."""
    fields = check_headers(headers)
    conn = UnixHTTPConnection(socket_path, timeout)
    try:
        conn.connect()
        conn.putrequest("GET" if json_body is None else "POST", target, skip_accept_encoding=True)
        conn.putheader("Connection", "close")
        if json_body is not None:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(json_body)))
        for name, value in fields:
            conn.putheader(name, value)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            # Refused early (403, 413, 429) and closed: its answer may be there.
            conn.endheaders(json_body)
        response = conn.getresponse()
    except http.client.HTTPException as err:
        conn.close()
        raise ResponseError(_garbled(err)) from None
    except BaseException:
        conn.close()
        raise
    return conn, response


def _garbled(err: http.client.HTTPException) -> str:
    if isinstance(err, http.client.RemoteDisconnected):
        return "connection closed before a complete response head"
    if isinstance(err, http.client.IncompleteRead):
        return f"connection closed after {len(err.partial)} body bytes"
    if isinstance(err, http.client.LineTooLong):
        return f"response head too long: {err}"
    text = str(err).strip()
    return f"not an HTTP/1.x response: {text[:60]!r}" if text else type(err).__name__


def _head(response: http.client.HTTPResponse) -> ResponseHead:
    headers = tuple((name.lower(), value) for name, value in response.getheaders())
    return ResponseHead(response.status, response.reason or "", headers)


def _body(response: http.client.HTTPResponse, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (more: ResponseError)."""
    if response.length is not None and response.length > limit:
        raise ResponseError(f"a {response.length}-byte body is over the client's limit")
    expected = response.length  # read1 stops short at a close without saying so
    chunks: list[bytes] = []
    received = 0
    try:
        while chunk := response.read1(_CHUNK):
            received += len(chunk)
            if received > limit:
                raise ResponseError(f"response body larger than {limit} bytes")
            chunks.append(chunk)
    except http.client.HTTPException as err:
        raise ResponseError(_garbled(err)) from None
    if expected is not None and received < expected:
        raise ResponseError(f"connection closed after {received} of {expected} body bytes")
    return b"".join(chunks)


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


def fetch(
    socket_path: str, path: str, query: Mapping[str, str | int] = _NO_QUERY, timeout: float = 30.0
) -> Response:
    """GET ``path``; the whole response, whatever its status.

    ``timeout`` bounds the whole exchange (TimeoutError past it), not each
    read, so a daemon trickling bytes cannot stretch it.
    """
    return _whole(*open_response(socket_path, request_target(path, query), (), timeout))


def post(socket_path: str, path: str, body: bytes, timeout: float = 30.0) -> Response:
    """POST ``body`` (JSON) to ``path``; the whole response, whatever its status.

    The same edge as :func:`fetch`, with the same errors and deadline.
    """
    return _whole(*open_response(socket_path, request_target(path), (), timeout, json_body=body))


def _whole(conn: UnixHTTPConnection, response: http.client.HTTPResponse) -> Response:
    """Read the whole response (at most MAX_BODY_BYTES of body), then close."""
    with contextlib.closing(conn):
        head = _head(response)
        body = _body(response, MAX_BODY_BYTES)
    return Response(head.status, head.reason, head.headers, body)


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
    conn, response = open_response(socket_path, request_target(path), headers, timeout)
    events = SseParser()
    with contextlib.closing(conn):
        head = _head(response)
        if head.status != 200:
            body = _body(response, 65536)  # an error's body, however delimited, is short
            raise ApiError.from_response(Response(head.status, head.reason, head.headers, body))
        kind = head.header("content-type") or "no Content-Type"
        if kind.split(";")[0].strip() != "text/event-stream":
            raise ResponseError(f"expected an event stream, got {kind}")
        if response.length is not None:
            raise ResponseError("an event stream with a Content-Length: not a live stream")
        conn.set_deadline(None)
        try:
            while data := response.read1(_CHUNK):
                yield from events.feed(data)
        except http.client.HTTPException as err:
            raise ResponseError(_garbled(err)) from None
