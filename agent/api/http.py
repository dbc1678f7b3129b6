"""Strict, sans-I/O HTTP/1.1 server-side framing for the local API.

The API serves ``GET`` (and lets ``HEAD`` through the parser so that
routing can answer it properly); a parser made with ``max_body_bytes`` > 0
also takes ``POST`` with a ``Content-Length`` body of at most that many
bytes (the one endpoint that takes one, ``POST /v1/events``); no other
request carries a body. That lets the parser be small and strict instead of
general, in the style of h11 (bytes in, events out, no sockets) but without
its generality:

- The whole request head (leading empty lines, request line, header fields
  and the blank line) must fit in ``max_request_bytes``. The limit is checked
  on every :meth:`RequestParser.feed`, before the head is complete, so a
  client that trickles bytes without ever finishing cannot make us buffer
  more than that.
- Lines end in CRLF. A bare CR or LF inside the head, obsolete line folding,
  whitespace before a header's colon and control bytes in values are refused
  (400): each is a known request-smuggling or header-injection vector, and
  no client we care about (curl, Python, browsers) sends them.
- ``Transfer-Encoding`` is refused (400: we never decode one and it is how
  smuggling starts). ``Content-Length`` > 0 is refused (413) except on a
  POST, whose body must fit ``max_body_bytes`` (413 as soon as the head
  says it would not, before a byte of it is read). A POST that sends
  ``Expect: 100-continue`` (curl does, for bodies over 1 KiB) is told to go
  on through :meth:`RequestParser.take_continue`.
- The target must be origin-form (``/...``), visible ASCII only. The path is
  percent-decoded one segment at a time and refused (400) if a segment is
  ``.`` or ``..``, is empty in the middle (``//``), or decodes to a slash,
  backslash, NUL or other control byte, or to invalid UTF-8. So the path a
  handler sees is already canonical: there is nothing left to normalise and
  nothing that could escape a prefix check.

Every parse failure is an :class:`HttpError` carrying the status to answer
with. After one, the connection's framing is lost: the server should send
:func:`error_response` (with ``keep_alive=False``) and close. The parser stays
failed: feeding it more raises the same error again.

Idle timeouts, the number of concurrent clients and peer credentials are the
server's business, not this module's: it has no clock and no sockets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

import msgspec

__all__ = [
    "HttpError",
    "Request",
    "RequestParser",
    "error_response",
    "reason_phrase",
    "response_bytes",
    "sse_response_head",
]

_REASONS: dict[int, str] = {
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

#: Methods the parser accepts. Both need no body; routing decides what each path allows.
ALLOWED_METHODS: frozenset[str] = frozenset({"GET", "HEAD"})
#: ... and with bodies accepted (``max_body_bytes`` > 0).
BODY_METHODS: frozenset[str] = ALLOWED_METHODS | {"POST"}

# RFC 9110 token characters: method and field names.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
# Target: visible ASCII only (RFC 9112 forbids whitespace; we also refuse non-ASCII).
_TARGET_BYTES = re.compile(rb"[\x21-\x7e]+")
# Field value: HTAB, SP, VCHAR and obs-text. No other control bytes.
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_DIGITS = re.compile(rb"[0-9]+")


def reason_phrase(status: int) -> str:
    """The standard reason phrase for ``status``, or ``""`` when we know none.

    An empty reason phrase is valid HTTP/1.1 (clients must ignore it), so an
    unlisted status still produces a well-formed status line.
    """
    return _REASONS.get(status, "")


class HttpError(Exception):
    """A request that must be refused with ``status``.

    ``reason`` is a human sentence naming what was wrong and what was
    expected; it goes into the JSON error body. ``headers`` are extra
    response headers the status calls for (``Allow`` on a 405).
    """

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers


class Request(msgspec.Struct, frozen=True):
    """One parsed request head.

    ``target`` is the raw request-target as sent; ``path`` is its decoded,
    validated path (see the module docstring for what is refused), and
    ``query`` its decoded query (``+`` is a space; repeated names collect
    every value in order). Header names are lower-cased; values keep their
    order and have surrounding whitespace removed.
    """

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: list[tuple[str, str]]
    http_version: str
    keep_alive: bool
    #: The body (a POST's; empty for every other request).
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None if absent."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in the order sent."""
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]


class RequestParser:
    """Incremental parser for the request heads arriving on one connection.

    Call :meth:`feed` with whatever bytes arrived. It returns a
    :class:`Request` once a head is complete and None until then. Pipelined
    requests stay buffered: after a Request, call ``feed(b"")`` until it
    returns None to collect the ones already received. Bytes are only ever
    buffered up to one head's worth (``max_request_bytes``) before an error,
    so memory per connection is bounded by the limit plus one read.

    ``max_body_bytes`` > 0: POST is accepted too, with a body of at most that
    many bytes (then buffered whole: the bound is the limit plus one read).
    """

    def __init__(
        self, max_request_bytes: int = 8192, max_headers: int = 32, *, max_body_bytes: int = 0
    ) -> None:
        if max_request_bytes < 16:
            raise ValueError(f"max_request_bytes must be at least 16, got {max_request_bytes}")
        if max_headers < 1:
            raise ValueError(f"max_headers must be at least 1, got {max_headers}")
        if max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must be at least 0, got {max_body_bytes}")
        self.max_request_bytes = max_request_bytes
        self.max_headers = max_headers
        self.max_body_bytes = max_body_bytes
        # A POST's head, parsed, waiting for its body's bytes (how many).
        self._awaiting: tuple[Request, int] | None = None
        self._continue = False
        self._buf = bytearray()
        # Where the search for the end of the head resumes, so feeding one
        # byte at a time costs O(n) overall, not O(n^2).
        self._scan_from = 0
        # How far line endings have been checked (see _check_line_ends).
        self._checked = 0
        self._error: HttpError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a returned Request.

        A server whose idle timeout fires can use this to tell a client that
        said nothing (close quietly) from one stuck mid-request (408).
        """
        return len(self._buf) + (1 if self._awaiting is not None else 0)

    def take_continue(self) -> bool:
        """True once after a POST's head asked ``Expect: 100-continue`` and
        its body is acceptable: the server should send ``100 Continue``."""
        wanted, self._continue = self._continue, False
        return wanted

    def feed(self, data: bytes) -> Request | None:
        """Add ``data`` and return the next complete request, if there is one.

        Raises :class:`HttpError` for a request that must be refused; the
        parser then stays failed and raises the same error on every call.
        """
        if self._error is not None:
            raise self._error
        self._buf += data
        try:
            return self._next()
        except HttpError as exc:
            self._error = exc
            self._buf.clear()
            raise

    def _next(self) -> Request | None:
        if self._awaiting is not None:
            return self._body()
        buf = self._buf
        limit = self.max_request_bytes
        # RFC 9112 2.2: ignore empty lines before the request line (some
        # clients send a CRLF after a body). They count towards the limit.
        start = 0
        while buf.startswith(b"\r\n", start):
            start += 2
        end = buf.find(b"\r\n\r\n", max(start, self._scan_from))
        self._check_line_ends(len(buf) if end == -1 else end + 4)
        if end == -1:
            if len(buf) > limit:
                raise self._too_large(start)
            self._scan_from = max(start, len(buf) - 3)
            return None
        if end + 4 > limit:
            raise self._too_large(start)
        head = bytes(buf[start:end])
        del buf[: end + 4]
        self._scan_from = 0
        self._checked = 0
        accepting = self.max_body_bytes > 0
        request = _parse_head(
            head, self.max_headers, BODY_METHODS if accepting else ALLOWED_METHODS
        )
        length = _body_length(request, self.max_body_bytes)
        if not length:
            return request
        self._awaiting = (request, length)
        self._continue = any(
            name == "expect" and value.lower() == "100-continue" for name, value in request.headers
        )
        return self._body()

    def _body(self) -> Request | None:
        """The waiting POST with its body, once all of it is here."""
        assert self._awaiting is not None
        request, length = self._awaiting
        if len(self._buf) < length:
            return None
        body = bytes(self._buf[:length])
        del self._buf[:length]
        self._awaiting = None
        self._continue = False
        return msgspec.structs.replace(request, body=body)

    def _check_line_ends(self, stop: int) -> None:
        """Refuse a bare LF or CR as soon as it arrives.

        Without this, a client ending lines in LF alone would never complete
        a head and would sit until the idle timeout; answering 400 at once is
        clearer. Only ``buf[:stop]`` (the current head) is checked, so a bad
        pipelined request cannot fail the good one before it.
        """
        buf = self._buf
        pos = self._checked
        while (i := buf.find(b"\n", pos, stop)) != -1:
            if i == 0 or buf[i - 1] != 0x0D:
                raise HttpError(400, "bare LF in the request head; lines must end in CRLF")
            pos = i + 1
        pos = self._checked
        while (i := buf.find(b"\r", pos, stop)) != -1:
            if i + 1 < len(buf) and buf[i + 1] != 0x0A:
                raise HttpError(400, "bare CR in the request head; lines must end in CRLF")
            pos = i + 1
        # A CR at the very end may yet be followed by its LF: look again next time.
        self._checked = stop - 1 if stop and buf[stop - 1] == 0x0D else stop

    def _too_large(self, start: int) -> HttpError:
        first_line_end = self._buf.find(b"\r\n", start)
        if first_line_end == -1 or first_line_end > self.max_request_bytes:
            return HttpError(
                414, f"request line longer than the {self.max_request_bytes}-byte limit"
            )
        return HttpError(431, f"request head larger than the {self.max_request_bytes}-byte limit")


def _parse_head(head: bytes, max_headers: int, methods: frozenset[str]) -> Request:
    if b"\r" in head.replace(b"\r\n", b"") or b"\n" in head.replace(b"\r\n", b""):
        raise HttpError(400, "request head contains a bare CR or LF; lines must end in CRLF")
    lines = head.split(b"\r\n")
    method, target, version = _parse_request_line(lines[0], methods)
    field_lines = lines[1:]
    if len(field_lines) > max_headers:
        raise HttpError(431, f"more than {max_headers} header fields")
    headers = [_parse_field(line) for line in field_lines]
    _check_framing(headers, version)
    path, query = _parse_target(target)
    return Request(
        method=method,
        target=target.decode("ascii"),
        path=path,
        query=query,
        headers=headers,
        http_version=version,
        keep_alive=_keep_alive(headers, version),
    )


def _parse_request_line(line: bytes, methods: frozenset[str]) -> tuple[str, bytes, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise HttpError(400, "malformed request line; expected 'METHOD /path HTTP/1.1'")
    raw_method, target, raw_version = parts
    version = _VERSION.fullmatch(raw_version)
    if version is None:
        raise HttpError(400, "malformed HTTP version in the request line; expected HTTP/1.1")
    if version.group(1, 2) not in ((b"1", b"0"), (b"1", b"1")):
        raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    if _TOKEN.fullmatch(raw_method) is None:
        raise HttpError(400, "malformed method in the request line")
    method = raw_method.decode("ascii")
    if method not in methods:
        allow = ", ".join(sorted(methods, key=("GET", "HEAD", "POST").index))
        expected = "GET or POST" if "POST" in methods else "GET"
        raise HttpError(
            405, f"method {method} is not allowed; expected {expected}", (("Allow", allow),)
        )
    if _TARGET_BYTES.fullmatch(target) is None:
        raise HttpError(400, "request target contains non-ASCII, space or control bytes")
    if not target.startswith(b"/"):
        raise HttpError(400, "request target must be a path starting with '/'")
    if b"#" in target:
        raise HttpError(400, "request target must not contain a fragment ('#')")
    return method, target, f"{version.group(1).decode()}.{version.group(2).decode()}"


def _parse_field(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise HttpError(400, "obsolete line folding in the header fields is not accepted")
    name, colon, value = line.partition(b":")
    if not colon:
        raise HttpError(400, "malformed header field; expected 'Name: value'")
    if _TOKEN.fullmatch(name) is None:
        raise HttpError(400, "malformed header field name (no whitespace before the colon)")
    value = value.strip(b" \t")
    if _FIELD_VALUE.fullmatch(value) is None:
        raise HttpError(400, f"header {name.decode('ascii')!r} contains control bytes")
    return name.decode("ascii").lower(), value.decode("latin-1")


def _check_framing(headers: list[tuple[str, str]], version: str) -> None:
    """Refuse a chunked body and a bad length, and enforce HTTP/1.1's Host rule."""
    if any(name == "transfer-encoding" for name, _ in headers):
        raise HttpError(400, "request bodies are not accepted (Transfer-Encoding given)")
    lengths = [value for name, value in headers if name == "content-length"]
    if len(lengths) > 1:
        raise HttpError(400, "more than one Content-Length header")
    if lengths and _DIGITS.fullmatch(lengths[0].encode("latin-1")) is None:
        raise HttpError(400, "Content-Length must be a decimal number")
    if version == "1.1":
        hosts = sum(1 for name, _ in headers if name == "host")
        if hosts != 1:
            raise HttpError(400, "an HTTP/1.1 request needs exactly one Host header")


def _body_length(request: Request, max_body_bytes: int) -> int:
    """How many body bytes follow ``request``'s head (0: none). Only a POST
    has a body, of at most ``max_body_bytes``; a body anywhere else, or a
    larger one, is refused (413) from the head alone."""
    raw = (request.header("content-length") or "0").lstrip("0") or "0"
    # Past 18 digits the number means nothing here (and int() of thousands refuses).
    length = int(raw) if len(raw) <= 18 else 10**18
    if request.method != "POST":
        if length:
            raise HttpError(413, f"a {request.method} request takes no body (Content-Length > 0)")
        return 0
    if length > max_body_bytes:
        raise HttpError(
            413, f"request body of {length} bytes is over the {max_body_bytes}-byte limit"
        )
    return length


def _keep_alive(headers: list[tuple[str, str]], version: str) -> bool:
    tokens = {
        token.strip().lower()
        for name, value in headers
        if name == "connection"
        for token in value.split(",")
    }
    if "close" in tokens:
        return False
    return version == "1.1" or "keep-alive" in tokens


def _parse_target(target: bytes) -> tuple[str, dict[str, list[str]]]:
    raw_path, _, raw_query = target.partition(b"?")
    return _decode_path(raw_path), _decode_query(raw_query)


def _percent_decode(raw: bytes, what: str) -> bytes:
    if _BAD_PERCENT.search(raw) is not None:
        raise HttpError(400, f"malformed percent-escape in the {what}")
    return unquote_to_bytes(raw)


def _decode_path(raw: bytes) -> str:
    segments = raw.split(b"/")[1:]  # raw starts with "/": the first piece is empty
    decoded: list[str] = []
    for index, segment in enumerate(segments):
        if not segment and index != len(segments) - 1:
            raise HttpError(400, "path contains an empty segment ('//')")
        value = _percent_decode(segment, "path")
        if value in (b".", b".."):
            raise HttpError(400, "path contains a '.' or '..' segment")
        if b"\x00" in value:
            raise HttpError(400, "path contains a NUL byte")
        if b"\\" in value:
            raise HttpError(400, "path contains a backslash")
        if b"/" in value:
            raise HttpError(400, "path contains an encoded slash ('%2F')")
        if _CONTROL.search(value) is not None:
            raise HttpError(400, "path contains a control byte")
        try:
            decoded.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise HttpError(400, "path is not valid UTF-8 once decoded") from None
    return "/" + "/".join(decoded)


def _decode_query(raw: bytes) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    for pair in raw.split(b"&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition(b"=")
        name = _decode_query_part(raw_name)
        if not name:
            raise HttpError(400, "query contains a parameter with an empty name")
        query.setdefault(name, []).append(_decode_query_part(raw_value))
    return query


def _decode_query_part(raw: bytes) -> str:
    value = _percent_decode(raw.replace(b"+", b" "), "query")
    if _CONTROL.search(value) is not None:
        raise HttpError(400, "query contains a control byte")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "query is not valid UTF-8 once decoded") from None


def _header_lines(headers: Iterable[tuple[str, str]]) -> bytes:
    out = bytearray()
    for name, value in headers:
        if _TOKEN.fullmatch(name.encode("latin-1", "replace")) is None:
            raise ValueError(f"invalid response header name {name!r}")
        encoded = value.encode("latin-1")  # UnicodeEncodeError is a ValueError
        if _FIELD_VALUE.fullmatch(encoded) is None:
            raise ValueError(f"response header {name!r} has CR, LF or control bytes")
        out += name.encode("ascii") + b": " + encoded + b"\r\n"
    return bytes(out)


def response_bytes(
    status: int,
    body: bytes,
    content_type: str,
    extra_headers: Iterable[tuple[str, str]] = (),
    *,
    keep_alive: bool = True,
    head_only: bool = False,
) -> bytes:
    """A complete HTTP/1.1 response with a ``Content-Length``-framed body.

    No ``Date`` header, so the same response is the same bytes (tests and
    evidence can compare them); RFC 9110 lets a server without a reliable
    clock omit it. ``head_only`` is for answering HEAD: the headers describe
    ``body`` but it is not sent. Raises ValueError for a status outside
    200-599, for 204/304 (which cannot carry this framing), or for a header
    name or value that could split the response (CR, LF, control bytes).
    """
    if not 200 <= status <= 599 or status in (204, 304):
        raise ValueError(f"response_bytes cannot frame status {status}")
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Connection", "keep-alive" if keep_alive else "close"),
        *extra_headers,
    ]
    head = f"HTTP/1.1 {status} {reason_phrase(status)}\r\n".encode("ascii")
    head += _header_lines(headers) + b"\r\n"
    return head if head_only else head + body


def error_response(error: HttpError, *, keep_alive: bool = False, head_only: bool = False) -> bytes:
    """The JSON error response for ``error``.

    Defaults to closing the connection: after a parse error the framing of
    whatever follows is unknown. Routing errors (404, 400 for a parameter)
    leave the framing intact, so the server may pass ``keep_alive=True``.
    """
    body = msgspec.json.encode(
        {"status": error.status, "error": reason_phrase(error.status), "detail": error.reason}
    )
    return response_bytes(
        error.status,
        body + b"\n",
        "application/json",
        error.headers,
        keep_alive=keep_alive,
        head_only=head_only,
    )


def sse_response_head(extra_headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """The head of a Server-Sent Events response.

    No Content-Length and no chunked coding: the stream is delimited by the
    connection closing, which is why it says ``Connection: close`` (the
    connection cannot be reused after a stream anyway). ``no-store`` keeps
    any cache from replaying a live tail.
    """
    headers = [
        ("Content-Type", "text/event-stream; charset=utf-8"),
        ("Cache-Control", "no-store"),
        ("Connection", "close"),
        *extra_headers,
    ]
    return b"HTTP/1.1 200 OK\r\n" + _header_lines(headers) + b"\r\n"
