"""The evidence pipeline when the disk refuses writes, on real tmpfs mounts.

No kernel capture here: events are fed to the pipeline directly, so each
outage can be staged exactly (full at start, full then room, read-only),
and the log, the slot and the counts checked after. The daemon-level test
(tests/test_evidence_diskfull.py) runs the same under a real capture.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from agent.capture.events import FileEvent
from agent.evidence.loss_slot import LossSlot, PendingLoss
from agent.evidence.pipeline import EvidencePipeline, open_pipeline
from agent.evidence.verify import verify_store
from tests.harness import records

EVENT = FileEvent(
    pid=1, tid=1, ts_ns=1, uid=0, gid=0, cgroup_id=1, comm="x", op="open",
    syscall="openat", ret=3, dfd=-100, dfd2=0, path="/etc/hostname", path2="", flags=0, mode=0,
)  # fmt: skip


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / f"filler{len(list(disk.glob('filler*')))}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, bytes(size))
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def pipeline(state: Path, receive: trio.MemoryReceiveChannel[list[FileEvent]]) -> EvidencePipeline:
    said: list[str] = []
    made = open_pipeline(
        state,
        receive,
        books=lambda: {},
        probes=[],
        config={},
        say=said.append,  # type: ignore[arg-type]
    )
    made.tick_interval = 0.05
    return made


def types(state: Path) -> list[str]:
    return [str(r["type"]).removeprefix("dev.tracehound.") for r in records(state)]


def store_losses(state: Path) -> int:
    return sum(
        stages.get("evidence:store", 0)
        for r in records(state)
        if str(r["type"]).endswith("capture.loss.v1")
        for stages in r["body"]["data"]["counts"].values()
    )


async def test_a_disk_full_at_start_does_not_stop_capture(disk: Path) -> None:
    fill(disk)
    state = disk / "ev"
    send, receive = trio.open_memory_channel[list[FileEvent]](100)
    p = pipeline(state, receive)
    assert p.failing is not None and "No space" in p.failing and p.sealed is None
    async with trio.open_nursery() as nursery:
        await nursery.start(p.run)
        for _ in range(20):
            await send.send([EVENT])
        with trio.fail_after(10):
            while p.lost_to_store < 20:
                await trio.sleep(0.02)
        assert p.failing is not None and p.lost_to_store == 20
        for filler in disk.glob("filler*"):
            filler.unlink()
        with trio.fail_after(20):
            while p.failing is not None:
                await trio.sleep(0.1)
        await send.send([EVENT])
        await send.aclose()
    # What waited (anchor, start, degraded) came first, then the loss record.
    seen = types(state)
    assert seen[1:5] == ["capture.anchor.v1", "capture.start.v1", "capture.degraded.v1",
                         "capture.loss.v1"], seen  # fmt: skip
    assert store_losses(state) == 20
    assert [t for t in seen if t.startswith("capture.")][-1] == "capture.stop.v1"
    assert verify_store(state).ok


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A real ext4 (loop device) mounted errors=remount-ro, and the sysfs
    file that makes it hit an error: ext4 then goes read-only at once, as
    it does on a real I/O error."""
    if os.geteuid() != 0:
        pytest.skip("a loop mount needs root")
    image, mount = tmp_path / "ext4.img", tmp_path / "ext4"
    mount.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(mount)], check=True)
    try:
        device = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", str(mount)], capture_output=True, text=True
        ).stdout.strip()
        yield mount, Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_filesystem_gone_read_only_is_an_outage_not_a_crash(
    ext4: tuple[Path, Path],
) -> None:
    mount, trigger = ext4
    state = mount / "ev"
    send, receive = trio.open_memory_channel[list[FileEvent]](100)
    p = pipeline(state, receive)
    async with trio.open_nursery() as nursery:
        await nursery.start(p.run)
        await send.send([EVENT])
        await trio.sleep(0.3)
        trigger.write_text("1\n")  # ext4_error: remounted read-only
        with trio.fail_after(10):
            while p.failing is None:
                await send.send([EVENT])
                await trio.sleep(0.05)
        await trio.sleep(1.5)  # reopen attempts meet the read-only fs: still failing
        assert p.failing is not None and "Read-only" in p.failing
        for _ in range(10):
            await send.send([EVENT])
        await send.aclose()
    # Capture ran to its end; what the log missed is counted.
    assert p.lost_to_store >= 10
    assert p.losses.table()["file"]["evidence:store"] >= 10


async def test_failed_reopens_count_nothing_that_was_not_lost(disk: Path) -> None:
    state = disk / "ev"
    send, receive = trio.open_memory_channel[list[FileEvent]](100)
    p = pipeline(state, receive)
    async with trio.open_nursery() as nursery:
        await nursery.start(p.run)
        await trio.sleep(0.3)
        fill(disk)
        await send.send([EVENT])  # the write that finds the disk full
        with trio.fail_after(10):
            while p.failing is None:
                await send.send([EVENT])
                await trio.sleep(0.05)
        lost = p.lost_to_store
        await trio.sleep(2.0)  # reopen attempts: each made a loss report that failed
        assert p.lost_to_store == lost  # loss reports are never counted as lost
        for filler in disk.glob("filler*"):
            filler.unlink()
        with trio.fail_after(20):
            while p.failing is not None:
                await trio.sleep(0.1)
        await send.aclose()
    assert store_losses(state) == lost


async def test_a_previous_runs_counts_survive_a_disk_still_full(disk: Path) -> None:
    state = disk / "ev"
    state.mkdir(mode=0o700)
    slot = LossSlot(state)
    slot.prepare()
    earlier = PendingLoss(
        reason="No space left on device", boot_id="b", window_start="2026-01-01T00:00:00Z",
        window_end="2026-01-01T00:01:00Z", counts={"file": {"evidence:store": 5000}}, stopped=True,
    )  # fmt: skip
    slot.write(earlier)
    fill(disk)
    send, receive = trio.open_memory_channel[list[FileEvent]](100)
    p = pipeline(state, receive)
    async with trio.open_nursery() as nursery:
        await nursery.start(p.run)
        for _ in range(3):
            await send.send([EVENT])
        await trio.sleep(0.3)
        await send.aclose()
    kept = slot.read()
    assert kept is not None and kept.counts["file"]["evidence:store"] == 5003  # 5000 + 3
    # Room again: the next start writes both runs' counts, once.
    for filler in disk.glob("filler*"):
        filler.unlink()
    send, receive = trio.open_memory_channel[list[FileEvent]](100)
    p = pipeline(state, receive)
    async with trio.open_nursery() as nursery:
        await nursery.start(p.run)
        await send.aclose()
    carried = [
        r["body"]["data"]
        for r in records(state)
        if str(r["type"]).endswith("capture.loss.v1")
        and r["body"]["data"].get("cause", {}).get("previous_run")
    ]
    assert [c["counts"]["file"]["evidence:store"] for c in carried] == [5003]
    assert slot.read() is None
