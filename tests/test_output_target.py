"""Output targets (agent.output_target) on real files, FIFOs and device nodes,
then through the commands that write them.

Device nodes are made in the test's own directory (``os.mknod``, the
numbers of /dev/null): the host's /dev/null is never a target here.
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import UsageError
from agent.evidence.store import EvidenceStore
from agent.output_target import (
    OutputError,
    OutputTarget,
    check_output,
    open_stream,
    replace_output,
    write_output,
)
from tests.conftest import REPO, TRACEHOUND


def null_device(path: Path) -> Path:
    """A character device node like /dev/null (1, 3), at ``path``."""
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    return path


def target(option: str, path: Path | str) -> OutputTarget:
    checked = check_output(option, str(path))
    assert checked is not None
    return checked


class FifoReader:
    """A FIFO with a reader thread collecting everything written to it."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path, 0o600)
        self.path = path
        self.data = b""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with open(self.path, "rb") as f:  # waits for the writer
            self.data = f.read()

    def join(self) -> bytes:
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the FIFO's writer never closed it"
        return self.data


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The loosest umask: modes must not depend on it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def listing(directory: Path) -> dict[str, tuple[int, int]]:
    """Every name in ``directory`` with (inode, mode), to see what a command left."""
    return {p.name: (p.lstat().st_ino, p.lstat().st_mode) for p in directory.iterdir()}


# --- the module --------------------------------------------------------------


def test_character_device_is_written_through_and_stays_one(tmp_path: Path) -> None:
    dev = null_device(tmp_path / "null")
    before = dev.lstat()
    checked = target("--output", dev)
    assert checked.kind == "through"
    write_output(checked, b"a profile\n")
    with open_stream(checked) as out:
        out.write(b"a stream\n")
    after = dev.lstat()
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == os.makedev(1, 3)
    assert (after.st_ino, stat.S_IMODE(after.st_mode)) == (before.st_ino, 0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]  # no temporary left


def test_fifo_with_a_reader_gets_the_bytes_and_stays_a_fifo(tmp_path: Path) -> None:
    reader = FifoReader(tmp_path / "pipe")
    write_output(target("--stats-file", reader.path), b'{"balanced":true}\n')
    assert reader.join() == b'{"balanced":true}\n'
    assert stat.S_ISFIFO(reader.path.lstat().st_mode)


def test_symlink_is_refused_naming_where_it_points(tmp_path: Path) -> None:
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0\n")
    link = tmp_path / "out.json"
    link.symlink_to(victim)
    with pytest.raises(UsageError) as err:
        check_output("--output", str(link))
    message = str(err.value)
    assert message == f"--output {link}: is a symlink to {victim}; refusing to follow it"
    assert os.readlink(link) == str(victim) and victim.read_text() == "root:x:0:0\n"


def test_regular_file_is_replaced_by_a_new_0600_inode(tmp_path: Path, umask_zero: None) -> None:
    out = tmp_path / "profile.json"
    out.write_bytes(b"old\n")
    out.chmod(0o644)
    other = tmp_path / "elsewhere"
    os.link(out, other)  # the old inode has another name: it must keep its bytes
    old_inode = out.stat().st_ino
    write_output(target("--output", out), b"new\n")
    st = out.lstat()
    assert stat.S_ISREG(st.st_mode) and st.st_ino != old_inode
    assert stat.S_IMODE(st.st_mode) == 0o600 and out.read_bytes() == b"new\n"
    assert other.read_bytes() == b"old\n" and other.stat().st_nlink == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "profile.json"]


def test_new_file_is_0600_whatever_the_umask(tmp_path: Path, umask_zero: None) -> None:
    written = tmp_path / "stats.json"
    write_output(target("--stats-file", written), b"{}\n")
    streamed = tmp_path / "events.ndjson"
    with open_stream(target("--events", streamed)) as out:
        out.write(b"{}\n")
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(streamed.stat().st_mode) == 0o600
    assert written.read_bytes() == streamed.read_bytes() == b"{}\n"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "bundle.tar"
    out.write_bytes(b"the last good bundle")
    inode = out.stat().st_ino
    with pytest.raises(RuntimeError, match="midway"), replace_output(target("-o", out)) as w:
        w.write(b"half a bundle")
        raise RuntimeError("midway")
    assert out.read_bytes() == b"the last good bundle" and out.stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.tar"]


def test_a_stream_replaces_the_file_at_open_then_grows(tmp_path: Path) -> None:
    out = tmp_path / "events.ndjson"
    out.write_bytes(b"last run's events\n")
    keep = tmp_path / "kept"
    os.link(out, keep)
    with open_stream(target("--events", out)) as stream:
        assert out.read_bytes() == b""  # already the new file
        stream.write(b"one\n")
        assert out.read_bytes() == b"one\n"
        stream.write(b"two\n")
    assert out.read_bytes() == b"one\ntwo\n" and keep.read_bytes() == b"last run's events\n"


def test_a_target_swapped_for_a_symlink_after_the_check_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "out.json"
    checked = target("--profile-file", out)  # a new path when checked
    out.symlink_to(victim)
    with pytest.raises(OutputError, match="became a symlink since it was checked"):
        write_output(checked, b"x")
    assert os.readlink(out) == str(victim) and victim.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "victim"]


def test_a_fifo_swapped_for_a_file_after_the_check_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    checked = target("--events", fifo)
    fifo.unlink()
    fifo.write_bytes(b"someone's file")
    with pytest.raises(OutputError, match="was replaced since it was checked"):
        open_stream(checked)
    assert fifo.read_bytes() == b"someone's file"  # not truncated, not written


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        check_output("--stats-file", str(tmp_path))
    assert str(err.value) == (
        f"--stats-file {tmp_path}: is a directory;"
        " expected a file path, a FIFO or a character device"
    )


def test_a_missing_parent_is_refused_and_not_made(tmp_path: Path) -> None:
    value = tmp_path / "no" / "such" / "out"
    with pytest.raises(UsageError) as err:
        check_output("--events", str(value))
    assert str(err.value).startswith(f"--events {value}: directory {value.parent} does not exist")
    assert list(tmp_path.iterdir()) == []


def test_a_name_with_a_newline_stays_one_line(tmp_path: Path) -> None:
    link = tmp_path / "evil\nname"
    link.symlink_to("/etc/passwd")
    with pytest.raises(UsageError) as err:
        check_output("--output", str(link))
    assert "\n" not in str(err.value) and "evil\\nname" in str(err.value)


@pytest.mark.parametrize(
    "name",
    [
        "\u00e9" * 120,  # 240 bytes: 120 characters, cut by characters, fit; bytes do not
        "\u00e9" * 127 + "x",  # 255 bytes, the longest name there is
        "x" + "\U0001f600" * 63 + "ab",  # 4-byte characters across the cut
        "\udcff" * 255,  # 255 bytes that are not UTF-8 (surrogateescape, as from argv)
    ],
    ids=["240-bytes-e-acute", "255-bytes", "4-byte-chars", "not-utf8"],
)
def test_a_long_name_gets_a_temporary_that_fits(tmp_path: Path, name: str) -> None:
    """The temporary beside a long target is cut by bytes (255 a name), and
    between characters: a valid UTF-8 name gives a valid UTF-8 temporary."""
    path = tmp_path / name
    seen: list[bytes] = []
    with replace_output(target("--output", path)) as out:
        out.write(b"bundle")
        seen = [os.fsencode(p.name) for p in tmp_path.iterdir()]
    assert len(seen) == 1 and len(seen[0]) <= 255, seen
    temporary = seen[0]
    assert temporary.startswith(b".") and temporary.endswith(b".tmp")
    stem = temporary[1:].rsplit(b".", 2)[0]  # what was kept of the name
    assert os.fsencode(name).startswith(stem) and len(stem) >= 190
    if name.isprintable():
        assert temporary.decode("utf-8")  # no character cut in half
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert path.read_bytes() == b"bundle"
    with open_stream(target("--events", path)) as stream:  # the stream's temporary too
        stream.write(b"line\n")
    assert path.read_bytes() == b"line\n"


# --- through the commands ----------------------------------------------------


@pytest.fixture
def small_log(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    with EvidenceStore(state) as store:
        for i in range(30):
            store.append("note", {"n": i})
    return state


def cli(*args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    out = subprocess.run([*TRACEHOUND, *args], capture_output=True, cwd=REPO, timeout=60, **kw)  # type: ignore[call-overload]
    assert b"Traceback" not in out.stderr, out.stderr
    return out  # type: ignore[no-any-return]


def test_export_to_stdout_a_device_and_a_file_gives_the_same_bundle(
    small_log: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "b.tar"
    to_file = cli("evidence", "export", "--state-dir", str(small_log), "-o", str(bundle))
    assert to_file.returncode == 0, to_file.stderr
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    to_stdout = cli("evidence", "export", "--state-dir", str(small_log), "-o", "-")
    assert to_stdout.returncode == 0 and b"bundle written to stdout" in to_stdout.stderr
    assert to_stdout.stdout == bundle.read_bytes() and len(bundle.read_bytes()) >= 10240
    dev = null_device(tmp_path / "null")
    to_dev = cli("evidence", "export", "--state-dir", str(small_log), "-o", str(dev))
    assert to_dev.returncode == 0, to_dev.stderr
    assert stat.S_ISCHR(dev.lstat().st_mode)
    reader = FifoReader(tmp_path / "pipe")
    to_fifo = cli("evidence", "export", "--state-dir", str(small_log), "-o", str(reader.path))
    assert to_fifo.returncode == 0, to_fifo.stderr
    assert reader.join() == bundle.read_bytes()


def test_export_refuses_a_symlink_and_touches_nothing(small_log: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = tmp_path / "b.tar"
    link.symlink_to(victim)
    before = listing(tmp_path)
    out = cli("evidence", "export", "--state-dir", str(small_log), "-o", str(link))
    assert out.returncode == 2
    assert out.stderr.decode() == (
        f"tracehound: --output {link}: is a symlink to {victim}; refusing to follow it\n"
    )
    assert listing(tmp_path) == before and victim.read_bytes() == b"precious"


def test_export_to_a_240_byte_name(small_log: Path, tmp_path: Path) -> None:
    """The review's case: ``export -o DIR/`` and 120 ``é``, a valid name."""
    bundle = tmp_path / ("\u00e9" * 120)
    out = cli("evidence", "export", "--state-dir", str(small_log), "-o", str(bundle))
    assert out.returncode == 0, out.stderr
    assert bundle.read_bytes()[257:262] == b"ustar"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([bundle.name, "state"])


def test_export_range_error_keeps_the_old_bundle(small_log: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(b"last week's bundle")
    out = cli("evidence", "export", "--state-dir", str(small_log), "-o", str(bundle),
              "--to", "9999")  # fmt: skip
    assert out.returncode == 2 and b"past the log's head" in out.stderr
    assert bundle.read_bytes() == b"last week's bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar", "state"]


def test_stream_to_a_fifo_and_a_replaced_file(small_log: Path, tmp_path: Path) -> None:
    reader = FifoReader(tmp_path / "pipe")
    to_fifo = cli("evidence", "stream", "--state-dir", str(small_log), "-o", str(reader.path))
    assert to_fifo.returncode == 0, to_fifo.stderr
    lines = reader.join().splitlines()
    assert len(lines) >= 31 and stat.S_ISFIFO(reader.path.lstat().st_mode)
    out = tmp_path / "log.ndjson"
    out.write_bytes(b"old")
    out.chmod(0o644)
    to_file = cli("evidence", "stream", "--state-dir", str(small_log), "-o", str(out))
    assert to_file.returncode == 0, to_file.stderr
    assert out.read_bytes().splitlines() == lines
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_stream_without_a_log_leaves_the_output_alone(tmp_path: Path) -> None:
    out = tmp_path / "log.ndjson"
    out.write_bytes(b"yesterday")
    res = cli("evidence", "stream", "--state-dir", str(tmp_path / "none"), "-o", str(out))
    assert res.returncode == 2 and out.read_bytes() == b"yesterday"


def test_profile_output_to_a_device_node_stays_a_device(kernel: None, tmp_path: Path) -> None:
    dev = null_device(tmp_path / "null")
    res = cli("profile", "-o", str(dev), "--", "/bin/true")
    assert res.returncode == 0, res.stderr
    st = dev.lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_run_outputs_follow_the_rules(kernel: None, tmp_path: Path) -> None:
    """``run``: the stats file replaced (its old inode kept by a hard link),
    the events into a FIFO, the ready file into a device node, and a symlink
    refused before anything is loaded."""
    config = tmp_path / "t.toml"
    config.write_text("[api]\nenabled = false\n")
    link = tmp_path / "profile.json"
    link.symlink_to(tmp_path / "t.toml")
    refused = cli("run", "--config", str(config), "--profile-file", str(link), "--duration", "1")
    assert refused.returncode == 2 and refused.stderr.decode() == (
        f"tracehound: --profile-file {link}: is a symlink to {config}; refusing to follow it\n"
    )
    stats = tmp_path / "stats.json"
    stats.write_bytes(b"old stats")
    os.link(stats, tmp_path / "stats.old")
    events = FifoReader(tmp_path / "events")
    ready = null_device(tmp_path / "ready")
    res = cli("run", "--config", str(config), "--duration", "1.5", "--stats-interval", "0", "--stats-file", str(stats), "--events", str(events.path),
              "--ready-file", str(ready))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert b'"balanced"' in stats.read_bytes() and stat.S_IMODE(stats.stat().st_mode) == 0o600
    assert (tmp_path / "stats.old").read_bytes() == b"old stats"
    assert b'"kind"' in events.join() and stat.S_ISFIFO(events.path.lstat().st_mode)
    assert stat.S_ISCHR(ready.lstat().st_mode)


def test_a_fifo_with_no_reader_is_refused_after_a_bounded_wait(tmp_path: Path) -> None:
    """Waiting for a reader forever would hang a thread nothing can cancel
    (the daemon's start or stop with it): it waits, then fails in one line."""
    import time as _time

    from agent.output_target import OutputError, _open_through, check_output

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = check_output("--ready-file", str(fifo))
    began = _time.monotonic()
    with pytest.raises(OutputError, match=r"no reader after 0\.3 s"):
        _open_through(target, wait_s=0.3)
    assert 0.3 <= _time.monotonic() - began < 5
