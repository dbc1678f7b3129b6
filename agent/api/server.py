"""The local API server: HTTP/1.1 on a UNIX socket, the I/O edge.

Framing, routing and SSE encoding are pure (:mod:`agent.api.http`,
:mod:`agent.api.routes`, :mod:`agent.api.sse`); this module owns the socket
and the limits that need a clock or a file descriptor:

- **Who may ask.** The socket file has the configured mode and group, so the
  kernel refuses everyone else at ``connect``. Past that, the peer's
  credentials (``SO_PEERCRED``, taken by the kernel at connect, so they
  cannot be forged) must be root, the daemon's own uid, an allowed uid or
  an allowed primary gid (``api.allow_*``: they may read), or a producer's
  (``api.producer_*``: they may append events with ``POST /v1/events``,
  and only that; root and the daemon's own uid may do both). Each request
  is checked against what its peer may do (403 otherwise). Connecting is
  checked right after accept: anyone else
  gets 403 at once, counted, without its request being read, before it
  takes a client slot or a timeout, and is let go (:class:`RefusedConnections`
  holds at most a few, half-closed, for a moment), so refused peers cannot
  crowd out allowed ones.
- **How much.** At most ``max_clients`` allowed connections are served at
  once; one more is answered 503 and closed. A request head is at most
  ``max_request_bytes`` with ``max_headers`` lines (the parser enforces
  both as bytes arrive). A client has ``idle_timeout_s`` to send a whole
  request and to take each response; one that does not is closed.
- **How often.** A producer's events are limited per uid (a token bucket,
  ``api.producer_rate`` per second after ``api.producer_burst``; 429 with
  ``Retry-After`` past it, counted), checked before the body is looked at.
  An accepted one is attributed to its peer's program
  (:mod:`agent.api.peer_process`), looked up as it arrives.
- **Never capture.** Handlers read state; nothing here can block the drain.
  A handler that raises answers 500 and closes that connection only.

The socket is bound in a private directory next to its final path, given
its mode and group there, and renamed into place, so it is never reachable
with looser permissions, even for an instant.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import socket
import stat
import struct
import sys
import tempfile
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import trio

from agent.api.http import (
    HttpError,
    Request,
    RequestParser,
    error_response,
    response_bytes,
    sse_response_head,
)
from agent.api.peer_process import PeerProcess, identify
from agent.api.produce import MAX_BODY_BYTES, RateLimiter
from agent.api.routes import Route, route
from agent.config import ApiConfig, ConfigError

__all__ = [
    "ApiServerStats",
    "Handler",
    "Peer",
    "RefusedConnections",
    "Reply",
    "StreamReply",
    "bind_socket",
    "group_id",
    "is_allowed",
    "is_producer",
    "peer_credentials",
    "serve_api",
]

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_READ_SIZE = 4096
# After a last response: how long and how much unread input to swallow.
_LINGER_S = 0.5
_LINGER_BYTES = 1 << 16
# Refused connections held half-open after their 403: how many at most, how long.
_REFUSED_HELD = 64
_REFUSED_HOLD_S = 0.5
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Peer(msgspec.Struct, frozen=True):
    """Who is on the other end, as the kernel recorded it at connect;
    ``process``: its program, looked up for a producer's event only."""

    pid: int
    uid: int
    gid: int
    process: PeerProcess | None = None


class Reply(msgspec.Struct, frozen=True):
    """A whole response: status, body and its type."""

    status: int
    body: bytes
    content_type: str = "application/json"


Send = Callable[[bytes], Awaitable[None]]


class StreamReply(msgspec.Struct, frozen=True):
    """A Server-Sent Events response: ``run(send)`` writes events until it
    returns (the daemon stopping) or ``send`` raises (the client left)."""

    run: Callable[[Send], Awaitable[None]]


Handler = Callable[[Route, Peer], Awaitable[Reply | StreamReply]]


class ApiServerStats:
    """The server's own counters, for the metrics and ``/v1/stats``."""

    def __init__(self) -> None:
        self.responses: Counter[int] = Counter()  # by status
        self.forbidden = 0
        self.busy = 0
        self.timeouts = 0
        self.connections = 0
        self.active = 0
        #: Producers' events: accepted, forbidden, malformed, unwritten (by outcome).
        self.produced: Counter[str] = Counter()
        #: The producers' token buckets, by uid (bounded; its refusals counted there).
        self.producer_rate = RateLimiter()

    def producer_outcomes(self) -> dict[str, int]:
        """Producers' events by outcome: ``accepted``, ``forbidden`` (403),
        ``malformed`` (400), ``unwritten`` (503), ``rate_limited`` and
        ``table_full`` (429)."""
        rate = self.producer_rate
        outcomes = {"accepted": 0, "forbidden": 0, "malformed": 0, "unwritten": 0}
        outcomes.update(self.produced)
        return {**outcomes, "rate_limited": rate.limited, "table_full": rate.table_full}

    def as_dict(self) -> dict[str, object]:
        return {
            "responses": {str(k): v for k, v in sorted(self.responses.items())},
            "forbidden": self.forbidden,
            "busy": self.busy,
            "timeouts": self.timeouts,
            "connections": self.connections,
            "active": self.active,
            "producers": {**self.producer_outcomes(), "uids": len(self.producer_rate)},
        }


def peer_credentials(sock: socket.socket | trio.socket.SocketType) -> Peer:
    """``SO_PEERCRED`` of a connected UNIX socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return Peer(pid=pid, uid=uid, gid=gid)


def is_allowed(peer: Peer, config: ApiConfig, own_uid: int) -> bool:
    """May ``peer`` read? Root, the daemon's own uid, a configured uid or primary gid. Pure."""
    return (
        peer.uid in (0, own_uid) or peer.uid in config.allow_uids or peer.gid in config.allow_gids
    )


def is_producer(peer: Peer, config: ApiConfig, own_uid: int) -> bool:
    """May ``peer`` append events? Root, the daemon's own uid, a producer
    uid or primary gid (``api.producer_*``). Pure."""
    return (
        peer.uid in (0, own_uid)
        or peer.uid in config.producer_uids
        or peer.gid in config.producer_gids
    )


def group_id(group: str) -> int | None:
    """``api.group`` as a gid: None for "" (the daemon's own), a number as
    it is, a name looked up. Fails closed: an unknown name is refused at
    start-up rather than leaving the socket with a group nobody meant.

    Raises:
        ConfigError: no such group on this host.
    """
    if not group:
        return None
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"api.group: no group named {group!r} on this host") from None


def bind_socket(path: Path, mode: int, gid: int | None) -> socket.socket:
    """A listening UNIX socket at ``path`` with ``mode`` and group ``gid``.

    The parent directory is made if missing, mode 0755: clients in the
    socket's group must be able to reach it; the socket's own mode and
    group are what keep others out. A socket file left by a
    daemon that died is replaced; one that still answers belongs to a live
    daemon and is not (OSError EADDRINUSE), nor is any other kind of file.

    Raises:
        OSError: the directory cannot be made, the path is taken, or the
            bind, chmod or chown fails.
    """
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    _clear_stale(path)
    private = Path(tempfile.mkdtemp(prefix=".api-", dir=path.parent))  # mode 0700
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        staged = private / "s"
        sock.bind(os.fsencode(staged))
        os.chmod(staged, mode)
        if gid is not None:
            os.chown(staged, -1, gid)
        os.rename(staged, path)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    finally:
        if (private / "s").exists():
            (private / "s").unlink()
        private.rmdir()
    return sock


def _clear_stale(path: Path) -> None:
    try:
        kind = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(kind):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fsencode(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # nobody listens: a dead daemon's socket
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path} is in use by a running daemon")


async def serve_api(
    settings: Callable[[], ApiConfig],
    handler: Handler,
    listener_socket: socket.socket,
    path: Path,
    *,
    stats: ApiServerStats,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``listener_socket`` (from :func:`bind_socket`, at ``path``) until
    cancelled; then the socket file is removed, so clients see the daemon is gone.

    ``settings`` is read for each new connection, so a reload changes the
    allowed ids and the limits for the next client on.
    """
    inode = path.stat().st_ino
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(listener_socket))
    limiter = trio.CapacityLimiter(settings().max_clients)
    refusals = RefusedConnections(_REFUSED_HELD, _REFUSED_HOLD_S)
    own_uid = os.geteuid()

    async def connection(stream: trio.SocketStream) -> None:
        stats.connections += 1
        config = settings()
        if limiter.total_tokens != config.max_clients:
            limiter.total_tokens = config.max_clients
        async with stream:
            # Before any slot or timeout: a refused peer must not be able to
            # hold what allowed clients need, however many connections it opens.
            peer = peer_credentials(stream.socket)
            if not (is_allowed(peer, config, own_uid) or is_producer(peer, config, own_uid)):
                _refuse(stream, peer, stats, refusals)
                return
            try:
                limiter.acquire_nowait()
            except trio.WouldBlock:
                stats.busy += 1
                await _send_quietly(stream, _error(stats, HttpError(503, "too many clients")), 1.0)
                return
            stats.active += 1
            try:
                await _serve_connection(stream, peer, config, handler, stats, own_uid)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away
            finally:
                stats.active -= 1
                limiter.release()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(refusals.run)
            task_status.started()
            await trio.serve_listeners(connection, [listener])
    finally:
        with contextlib.suppress(OSError):
            if path.stat().st_ino == inode:  # still ours, not a successor's
                path.unlink()


def _error(stats: ApiServerStats, error: HttpError, *, keep_alive: bool = False) -> bytes:
    stats.responses[error.status] += 1
    return error_response(error, keep_alive=keep_alive)


def _refuse(
    stream: trio.SocketStream, peer: Peer, stats: ApiServerStats, refusals: RefusedConnections
) -> None:
    """Answer a peer that may not use the API with 403 at once, and let go of it.

    Nothing here waits: the 403 goes out before the request is read (it
    would change nothing), into a fresh socket's empty send buffer; then
    the write side is shut and the connection handed to ``refusals``, which
    holds no slot or task for it. A peer already gone is closed at once.
    """
    stats.forbidden += 1
    refusal = HttpError(
        403,
        f"uid {peer.uid} gid {peer.gid} may not use this API"
        " (api.allow_uids/gids; to append events, api.producer_uids/gids)",
    )
    data = _error(stats, refusal)
    sock = socket.socket(fileno=stream.socket.detach())  # ours now; the stream closes nothing
    sock.setblocking(False)
    try:
        sock.send(data, socket.MSG_NOSIGNAL)
        sock.shutdown(socket.SHUT_WR)
    except OSError:  # EPIPE, ECONNRESET: nobody left to read it
        _close_drained(sock)
        return
    refusals.hold(sock)


class RefusedConnections:
    """Refused connections, answered and half-closed, held open a moment.

    Why hold them at all: closing at once hangs up on a peer that has
    connected but not yet looked, and curl, which polls its new socket
    before it sends, then reports "Couldn't connect to server" instead of
    the 403 (64 times in 200 tries here). Half-closed, the peer reads the
    403 and an EOF and may still send its request. Bounded so that no peer
    can make this cost what allowed clients need: at most ``capacity``
    connections (a new one closes the oldest, so a flood only makes them
    close sooner) for at most ``hold_s`` each, all timed by one task,
    :meth:`run`. Each is closed with :func:`_close_drained`.
    """

    def __init__(self, capacity: int, hold_s: float) -> None:
        self.capacity = capacity
        self.hold_s = hold_s
        self._held: deque[tuple[float, socket.socket]] = deque()  # oldest first
        self._arrived = trio.Event()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, sock: socket.socket) -> None:
        """Keep ``sock`` until its time is up or room is needed (capacity 0: close it now)."""
        while self._held and len(self._held) >= self.capacity:
            _close_drained(self._held.popleft()[1])
        if self.capacity <= 0:
            _close_drained(sock)
            return
        self._held.append((trio.current_time() + self.hold_s, sock))
        self._arrived.set()

    async def run(self) -> None:
        """Close each held connection when its time is up; all of them when cancelled."""
        try:
            while True:
                if not self._held:
                    await self._arrived.wait()
                    self._arrived = trio.Event()
                    continue
                await trio.sleep_until(self._held[0][0])
                now = trio.current_time()
                while self._held and self._held[0][0] <= now:
                    _close_drained(self._held.popleft()[1])
        finally:
            while self._held:
                _close_drained(self._held.popleft()[1])


def _close_drained(sock: socket.socket) -> None:
    """Close ``sock`` after reading off, without waiting, what the peer already
    sent: closing a UNIX socket with unread input marks the peer's end reset
    (ECONNRESET), and a peer may then lose the answer it has not read yet."""
    with contextlib.suppress(OSError):  # BlockingIOError: nothing more to read now
        unread = 0
        while unread < _LINGER_BYTES and (chunk := sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)):
            unread += len(chunk)
    sock.close()


async def _send_quietly(stream: trio.SocketStream, data: bytes, timeout: float) -> None:
    """Send a last response, then close gently: closing a socket with unread
    input makes the kernel reset it, and the peer may lose the response."""
    with trio.move_on_after(timeout):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(data)
            await stream.send_eof()
    with trio.move_on_after(_LINGER_S):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            unread = 0
            while unread < _LINGER_BYTES and (chunk := await stream.receive_some(_READ_SIZE)):
                unread += len(chunk)


async def _read_request(
    stream: trio.SocketStream, parser: RequestParser, timeout: float
) -> Request | None:
    """The next request head; None if the client closed or stayed silent.

    Raises HttpError for a bad head and for a client that stopped half-way
    through one (408).
    """
    request = parser.feed(b"")  # a pipelined request already here
    with trio.move_on_after(timeout):
        while request is None:
            if parser.take_continue():  # a POST waiting to be told to send its body
                await stream.send_all(_CONTINUE)
            data = await stream.receive_some(_READ_SIZE)
            if not data:
                return None
            request = parser.feed(data)
        return request
    if parser.buffered:
        raise HttpError(408, f"request not complete within {timeout:g} seconds")
    raise TimeoutError


async def _serve_connection(
    stream: trio.SocketStream,
    peer: Peer,
    config: ApiConfig,
    handler: Handler,
    stats: ApiServerStats,
    own_uid: int,
) -> None:
    parser = RequestParser(
        config.max_request_bytes, config.max_headers, max_body_bytes=MAX_BODY_BYTES
    )
    timeout = config.idle_timeout_s
    while True:
        try:
            request = await _read_request(stream, parser, timeout)
        except TimeoutError:
            stats.timeouts += 1
            return
        except HttpError as err:
            if err.status == 408:
                stats.timeouts += 1
            await _send_quietly(stream, _error(stats, err), timeout)
            return
        if request is None:
            return
        head_only = request.method == "HEAD"
        try:
            routed = route(request)
            asker = _may(routed, peer, config, own_uid, stream, stats)
            reply = await handler(routed, asker)
        except HttpError as err:
            data = _error(stats, err, keep_alive=request.keep_alive)
            with trio.move_on_after(timeout) as sending:
                await stream.send_all(_head_only(data) if head_only else data)
            if sending.cancelled_caught or not request.keep_alive:
                return
            continue
        except Exception as err:  # a bug must cost one answer, not the daemon
            print(f"tracehound: api: {request.path}: {err!r}", file=sys.stderr, flush=True)
            await _send_quietly(stream, _error(stats, HttpError(500, "internal error")), timeout)
            return
        stats.responses[200 if isinstance(reply, StreamReply) else reply.status] += 1
        if isinstance(reply, StreamReply):
            await _stream(stream, reply, head_only, timeout)
            return
        data = response_bytes(
            reply.status,
            reply.body,
            reply.content_type,
            keep_alive=request.keep_alive,
            head_only=head_only,
        )
        with trio.move_on_after(timeout) as sending:
            await stream.send_all(data)
        if sending.cancelled_caught:
            stats.timeouts += 1
            return
        if not request.keep_alive:
            return


def _may(
    routed: Route,
    peer: Peer,
    config: ApiConfig,
    own_uid: int,
    stream: trio.SocketStream,
    stats: ApiServerStats,
) -> Peer:
    """``peer``, if it may make this request (with its program, for a
    producer's event); else :class:`HttpError` 403, or 429 past its rate."""
    if routed.name != "produce":
        if not is_allowed(peer, config, own_uid):
            stats.forbidden += 1
            raise HttpError(
                403,
                f"uid {peer.uid} gid {peer.gid} may only append events here (api.allow_uids/gids)",
            )
        return peer
    if not is_producer(peer, config, own_uid):
        stats.produced["forbidden"] += 1
        raise HttpError(
            403,
            f"uid {peer.uid} gid {peer.gid} may not append events (api.producer_uids/gids)",
        )
    wait = stats.producer_rate.take(
        peer.uid, trio.current_time(), rate=config.producer_rate, burst=config.producer_burst
    )
    if wait is not None:
        raise HttpError(
            429,
            f"uid {peer.uid}: more than {config.producer_burst} events at once or"
            f" {config.producer_rate:g} per second (api.producer_rate/burst); try again later",
            (("Retry-After", str(int(wait))),),
        )
    return msgspec.structs.replace(peer, process=identify(stream.socket, peer.pid))


def _head_only(response: bytes) -> bytes:
    end = response.find(b"\r\n\r\n")
    return response if end < 0 else response[: end + 4]


async def _stream(
    stream: trio.SocketStream, reply: StreamReply, head_only: bool, timeout: float
) -> None:
    """Write an SSE response; a client that does not take a write within
    ``timeout`` is dropped (its buffer has been overflowing meanwhile)."""

    async def send(data: bytes) -> None:
        with trio.move_on_after(timeout) as sending:
            await stream.send_all(data)
        if sending.cancelled_caught:
            raise trio.BrokenResourceError("client stopped reading")

    await send(sse_response_head())
    if head_only:
        return
    await reply.run(send)
