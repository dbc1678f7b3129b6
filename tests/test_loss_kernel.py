"""Loss accounting against the real kernel: generated = delivered + lost, exactly.

A deliberately tiny ring buffer (one page) and a consumer held back make the
kernel drop records; after the probes are detached and the buffer drained,
every kind's books must balance to the event, and the losses must show.
"""

from __future__ import annotations

import os

import trio

from agent.capture.loader import LoadOptions, load
from agent.capture.session import CaptureSession
from agent.commands.launcher import launch
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.streaming import StreamingSink
from agent.sinks.tee import TeeSink

FLOOD = (
    "import os\n"
    "for i in range(3000):\n"
    "    try:\n"
    "        os.close(os.open('/nonexistent-%d' % (i % 7), os.O_RDONLY))\n"
    "    except OSError:\n"
    "        pass\n"
    "for i in range(20):\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        os.execv('/bin/true', ['/bin/true', str(i)])\n"
    "    os.waitpid(pid, 0)\n"
)


async def _wait(pid: int) -> None:
    fd = os.pidfd_open(pid)
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)
    os.waitpid(pid, 0)


async def test_tiny_ring_buffer_with_held_back_consumer_balances_exactly(
    kernel: None, system_python: str
) -> None:
    capture = load(LoadOptions(ringbuf_pages=1, scoped=True))
    try:
        sink = AggregatingSink()
        session = CaptureSession(capture, sink)
        child = launch([system_python, "-c", FLOOD])
        capture.add_to_scope(child.pid)
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            session.drain.paused = True  # the consumer is held back
            assert child.release() is None
            await _wait(child.pid)
            session.drain.paused = False
            session.stop()
        stats = session.stats()
    finally:
        capture.close()
    books = stats.kinds
    for kind, b in books.items():
        assert b.generated == b.lost_kernel + b.received, (kind, b)
        assert b.received == b.delivered + b.decode_errors + b.abandoned + b.dropped_sink, (
            kind,
            b,
        )
        assert b.balanced, (kind, b)
    assert books["file"].lost_kernel > 0, "a one-page ring buffer held back must lose"
    assert books["file"].delivered > 0
    assert books["file"].generated >= 3000
    assert books["exec"].generated >= 21
    assert stats.balanced


async def test_drop_policy_is_counted_at_the_sink_stage(kernel: None, system_python: str) -> None:
    """A streaming sink nobody reads, with the drop policy: the aggregating
    sink gets everything, the stream drops and counts, both balance."""
    capture = load(LoadOptions(scoped=True))
    try:
        aggregate = AggregatingSink()
        stream = StreamingSink(capacity=16, policy="drop")
        session = CaptureSession(capture, TeeSink([aggregate, stream]))
        child = launch([system_python, "-c", FLOOD])
        capture.add_to_scope(child.pid)
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            assert child.release() is None
            await _wait(child.pid)
            session.stop()
        stats = session.stats()
    finally:
        capture.close()
    file_books = stats.kinds["file"]
    assert file_books.sinks["aggregating"].dropped == 0
    assert file_books.sinks["aggregating"].delivered == file_books.received
    assert file_books.sinks["streaming"].dropped > 0
    assert file_books.dropped_sink == file_books.sinks["streaming"].dropped
    assert stream.depth == 16
    assert all(b.balanced for b in stats.kinds.values()), stats.kinds
