"""State directories on a fresh host, the evidence store's modes, and
``evidence keygen`` / ``--evidence`` / ``evidence.state_dir`` on real paths."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.evidence.keys import create_key
from agent.evidence.layout import key_path
from agent.evidence.store import EvidenceStore
from agent.state_dir import (
    StateDirError,
    ensure_dir,
    make_state_dir,
    remove_created,
    set_owner_mode,
)
from tests.conftest import REPO, TRACEHOUND


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The loosest umask: modes must not depend on it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def gid() -> int:
    """A group that is not root's, as the API group would be."""
    try:
        return grp.getgrnam("nogroup").gr_gid
    except KeyError:
        return 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def tree(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every path under ``root``: mode bits, inode, and a file's bytes."""
    out: dict[str, tuple[int, int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[str(path.relative_to(root))] = (st.st_mode, st.st_ino, data)
    return out


def cli(
    *args: str, stdout: object = subprocess.PIPE, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [*TRACEHOUND, *args],
        stdout=stdout,  # type: ignore[arg-type]
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},  # this tree's code, from any cwd
        timeout=60,
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("tracehound: ")
    return lines[0].removeprefix("tracehound: ")


# --- make_state_dir ----------------------------------------------------------


def test_missing_parents_are_made_0755_and_the_directory_0700(
    tmp_path: Path, umask_zero: None
) -> None:
    state = tmp_path / "var" / "lib" / "tracehound" / "evidence"
    created = make_state_dir(state)
    assert created == [tmp_path / "var", tmp_path / "var" / "lib", state.parent, state]
    assert [mode(p) for p in created] == [0o755, 0o755, 0o755, 0o700]
    assert make_state_dir(state) == []  # already there: nothing made


def test_with_a_group_the_directory_is_0750_and_that_group(tmp_path: Path, gid: int) -> None:
    state = tmp_path / "lib" / "evidence"
    make_state_dir(state, gid=gid)
    assert mode(state) == 0o750 and state.stat().st_gid == gid
    assert mode(state.parent) == 0o755  # a parent is for everyone to pass through


def test_an_existing_looser_directory_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "evidence"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    make_state_dir(state)
    assert mode(state) == 0o700


@pytest.mark.parametrize("kind", ["symlink", "file", "parent-file", "sticky"])
def test_unusable_paths_are_refused_and_nothing_is_made(tmp_path: Path, kind: str) -> None:
    real = tmp_path / "real"
    real.mkdir()
    if kind == "symlink":
        state = tmp_path / "evidence"
        state.symlink_to(real)
        expected = f"{state} is a symlink to {real}; refusing to follow it"
    elif kind == "file":
        state = tmp_path / "evidence"
        state.write_text("")
        expected = f"{state} exists and is not a directory"
    elif kind == "parent-file":
        (tmp_path / "lib").write_text("")
        state = tmp_path / "lib" / "tracehound" / "evidence"
        expected = f"cannot create {state}: {tmp_path / 'lib'} is not a directory"
    else:
        state = real
        real.chmod(0o1777)
        expected = f"{real} is a shared directory (sticky bit, like /tmp)"
    before = tree(tmp_path)
    with pytest.raises(StateDirError) as err:
        make_state_dir(state)
    assert str(err.value).startswith(expected), str(err.value)
    assert tree(tmp_path) == before


def state_of(path: Path) -> tuple[int, int, int, list[str]]:
    """A directory's mode, owner, group and names: what a refusal must leave."""
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, sorted(os.listdir(path))


def test_an_empty_path_is_refused_not_taken_for_the_current_directory() -> None:
    with pytest.raises(StateDirError) as err:
        make_state_dir("")
    assert str(err.value).startswith("an empty path (that would be the current directory)")


NOBODY = 65534


def test_a_directory_of_another_user_is_refused_and_left_alone(tmp_path: Path) -> None:
    """uid 65534 owning the log could rename keys/ away and plant segments -> /etc."""
    state = tmp_path / "evidence"
    state.mkdir()
    state.chmod(0o755)
    os.chown(state, NOBODY, NOBODY)
    before = state_of(state)
    with pytest.raises(StateDirError) as err:
        make_state_dir(state)
    assert str(err.value) == (
        f"{state} is owned by uid {NOBODY}, not by this user (uid {os.geteuid()}); expected a"
        " directory of tracehound's own, e.g. /var/lib/tracehound/evidence"
    )
    assert state_of(state) == before


def test_a_log_subdirectory_of_another_user_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "evidence"
    with EvidenceStore(state) as store:
        store.append("note", {"n": 1})
    os.chown(state / "segments", NOBODY, NOBODY)
    with pytest.raises(StateDirError) as err:
        EvidenceStore(state)
    assert str(err.value).startswith(f"{state / 'segments'} is owned by uid {NOBODY},")
    with pytest.raises(StateDirError):
        ensure_dir(state / "segments", 0o700)
    assert (state / "segments").stat().st_uid == NOBODY


@pytest.mark.parametrize("foreign", ["notes.txt", ".bashrc", "evil\nOK: 5 records\x1b[31m"])
def test_a_populated_directory_is_refused_not_chmodded(tmp_path: Path, foreign: str) -> None:
    """``--state-dir`` given a home directory or / by mistake: refused, mode kept."""
    state = tmp_path / "home"
    state.mkdir()
    state.chmod(0o755)
    (state / "segments").mkdir()  # a log's own names do not make it one
    (state / foreign).write_text("someone's")
    before = state_of(state)
    with pytest.raises(StateDirError) as err:
        make_state_dir(state)
    message = str(err.value)
    quoted = foreign if foreign.isprintable() else repr(foreign)
    assert message.startswith(f"{state} holds {quoted}, which is no part of an evidence log")
    assert message.isprintable()  # one line, no escape sequence
    assert message.endswith("(segments/, keys/, lock, recovered/, pending-loss)")
    assert state_of(state) == before


def test_an_evidence_log_or_an_empty_directory_is_used(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    assert make_state_dir(empty) == [] and mode(empty) == 0o700
    log = tmp_path / "log"
    log.mkdir(mode=0o755)
    for name in ("segments", "keys", "recovered", "lost+found"):
        (log / name).mkdir()
    for name in ("lock", "pending-loss"):
        (log / name).write_bytes(b"")
    assert make_state_dir(log) == [] and mode(log) == 0o700


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs at ``tmp_path/ro``; the test remounts it read-only."""
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount)])
    if done.returncode != 0:
        pytest.fail("could not mount a tmpfs (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def remount_ro(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)


def test_a_correct_directory_on_a_read_only_filesystem_is_accepted(
    read_only: Path, gid: int
) -> None:
    """fchmod fails on a read-only filesystem even to set the same mode: a
    directory that is right already must not be written to at all."""
    state = read_only / "evidence"
    shared = read_only / "shared"
    with EvidenceStore(state) as store:
        store.append("note", {"n": 1})
    make_state_dir(shared, gid=gid)
    looser = read_only / "looser"
    looser.mkdir(mode=0o755)
    looser.chmod(0o755)
    remount_ro(read_only)
    assert make_state_dir(state) == [] and make_state_dir(shared, gid=gid) == []
    assert ensure_dir(state / "segments", 0o700) is False
    segment = next((state / "segments").iterdir())
    fd = os.open(segment, os.O_RDONLY)
    try:
        set_owner_mode(fd, 0o600, None)  # right already: no fchmod
        with pytest.raises(OSError):
            set_owner_mode(fd, 0o640, None)  # a change: the filesystem refuses it
    finally:
        os.close(fd)
    with pytest.raises(StateDirError) as err:
        make_state_dir(looser)
    assert str(err.value) == f"{looser}: cannot set its mode: Read-only file system"
    assert mode(looser) == 0o755


def test_remove_created_takes_away_only_what_is_empty(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b"
    created = make_state_dir(state)
    (tmp_path / "a" / "keep").write_text("x")
    remove_created(created)
    assert not state.exists() and (tmp_path / "a" / "keep").exists()


# --- the store's modes ---------------------------------------------------------


def store_paths(state: Path) -> dict[str, Path]:
    segment = next((state / "segments").iterdir())
    torn = next((state / "recovered").iterdir())
    return {
        "state": state,
        "segments": state / "segments",
        "segment": segment,
        "recovered": state / "recovered",
        "torn": torn,
        "keys": state / "keys",
        "key": key_path(state),
        "lock": state / "lock",
    }


def sealed_store_with_a_torn_tail(state: Path, *, group: int | None = None) -> None:
    create_key(state)
    with EvidenceStore(state, checkpoint_every_records=3, group=group) as store:
        for i in range(10):
            store.append("note", {"n": i})
    segment = next((state / "segments").iterdir())
    with open(segment, "ab") as f:
        f.write(b'{"torn":')  # a crash mid-line: recovered/ on the next open
    EvidenceStore(state, group=group).close()


def test_a_new_store_is_private(tmp_path: Path, umask_zero: None) -> None:
    state = tmp_path / "lib" / "evidence"
    sealed_store_with_a_torn_tail(state)
    modes = {name: mode(path) for name, path in store_paths(state).items()}
    assert modes == {
        "state": 0o700,
        "segments": 0o700,
        "segment": 0o600,
        "recovered": 0o700,
        "torn": 0o600,
        "keys": 0o700,
        "key": 0o600,
        "lock": 0o600,
    }
    assert mode(state.parent) == 0o755


def test_a_store_with_a_group_lets_it_read_the_log_not_the_key(
    tmp_path: Path, umask_zero: None, gid: int
) -> None:
    state = tmp_path / "evidence"
    sealed_store_with_a_torn_tail(state, group=gid)
    paths = store_paths(state)
    got = {name: (mode(p), p.lstat().st_gid == gid) for name, p in paths.items()}
    assert got == {
        "state": (0o750, True),
        "segments": (0o750, True),
        "segment": (0o640, True),
        "recovered": (0o750, True),
        "torn": (0o640, True),
        "keys": (0o700, False),
        "key": (0o600, False),
        "lock": (0o600, False),
    }


def test_an_older_looser_store_is_tightened_on_open(tmp_path: Path) -> None:
    state = tmp_path / "evidence"
    sealed_store_with_a_torn_tail(state)
    paths = store_paths(state)
    for path in paths.values():
        path.chmod(0o755 if path.is_dir() else 0o644)
    EvidenceStore(state).close()
    assert {name: mode(p) for name, p in paths.items()} == {
        "state": 0o700,
        "segments": 0o700,
        "segment": 0o600,
        "recovered": 0o700,
        "torn": 0o600,
        "keys": 0o700,
        "key": 0o600,
        "lock": 0o600,
    }


# --- evidence keygen -----------------------------------------------------------


def test_keygen_on_a_fresh_host_makes_the_parents(tmp_path: Path) -> None:
    state = tmp_path / "var" / "lib" / "tracehound" / "evidence"
    out = cli("evidence", "keygen", "--state-dir", str(state))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("thk1-") and out.stdout.count("\n") == 1
    assert mode(key_path(state)) == 0o600 and mode(state) == 0o700
    assert mode(tmp_path / "var") == 0o755
    assert sorted(p.name for p in key_path(state).parent.iterdir()) == ["seal.key"]


@pytest.mark.parametrize(
    "args",
    [
        ("evidence", "keygen", "--state-dir", ""),
        ("evidence", "stream", "--state-dir", ""),
        ("evidence", "export", "--state-dir", "", "-o", "-"),
        ("evidence", "verify", ""),
        ("profile", "--evidence", "", "--", "/bin/true"),
        ("run", "--evidence", ""),
    ],
    ids=["keygen", "stream", "export", "verify", "profile", "run"],
)
def test_an_empty_state_dir_is_refused_and_the_current_directory_kept(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """``Path('')`` is ``.``: keygen chmodded the current directory 0700 and
    made keys/ in it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir(mode=0o755)
    cwd.chmod(0o755)
    (cwd / "work.txt").write_text("mine")
    before = tree(tmp_path), state_of(cwd)
    out = cli(*args, cwd=cwd)
    assert out.returncode == 2 and out.stdout == ""
    line = one_line(out)
    option = "--evidence" if "--evidence" in args else "--state-dir"
    if args[0] == "evidence":
        # Every evidence verb names itself and how the directory was given.
        given = "STATE_DIR" if args[1] == "verify" else option
        assert line.startswith(f"evidence {args[1]}: {given}: expected a directory path"), line
    else:
        assert line.startswith(f"{option}"), line
    assert "empty" in line
    assert (tree(tmp_path), state_of(cwd)) == before


def test_keygen_refuses_a_populated_or_foreign_directory(tmp_path: Path) -> None:
    populated = tmp_path / "populated"
    populated.mkdir(mode=0o755)
    populated.chmod(0o755)
    (populated / "report.pdf").write_text("x")
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o755)
    os.chown(foreign, NOBODY, NOBODY)
    before = tree(tmp_path), state_of(populated), state_of(foreign)
    for state, problem in (
        (populated, f"{populated} holds report.pdf, which is no part of an evidence log"),
        (foreign, f"{foreign} is owned by uid {NOBODY}, not by this user"),
    ):
        out = cli("evidence", "keygen", "--state-dir", str(state))
        assert out.returncode == 2 and out.stdout == ""
        assert one_line(out).startswith(f"--state-dir {state}: {problem}"), out.stderr
    assert (tree(tmp_path), state_of(populated), state_of(foreign)) == before


def test_keygen_keeps_a_log_shared_with_its_group(tmp_path: Path, gid: int) -> None:
    """The daemon shares the log with its API group (0750); keygen, which
    knows no group, must neither take the group's access nor change it."""
    state = tmp_path / "evidence"
    EvidenceStore(state, group=gid).close()
    assert (mode(state), state.stat().st_gid) == (0o750, gid)
    out = cli("evidence", "keygen", "--state-dir", str(state))
    assert out.returncode == 0, out.stderr
    assert (mode(state), state.stat().st_gid) == (0o750, gid)
    assert (mode(state / "segments"), (state / "segments").stat().st_gid) == (0o750, gid)
    assert mode(key_path(state).parent) == 0o700 and mode(key_path(state)) == 0o600


@pytest.mark.parametrize(("before", "after"), [(0o755, 0o700), (0o770, 0o700), (0o740, 0o740)])
def test_keygen_tightens_a_looser_directory_only(
    tmp_path: Path, gid: int, before: int, after: int
) -> None:
    state = tmp_path / "evidence"
    state.mkdir()
    os.chown(state, -1, gid)
    state.chmod(before)
    out = cli("evidence", "keygen", "--state-dir", str(state))
    assert out.returncode == 0, out.stderr
    assert (mode(state), state.stat().st_gid) == (after, gid)


def test_keygen_under_a_regular_file_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "lib").write_text("not a directory")
    before = tree(tmp_path)
    state = tmp_path / "var" / "lib" / "tracehound" / "evidence"
    out = cli("evidence", "keygen", "--state-dir", str(state))
    assert out.returncode == 2 and out.stdout == ""
    assert one_line(out) == (
        f"--state-dir {state}: cannot create {state}: {tmp_path / 'var' / 'lib'} is not a directory"
    )
    assert tree(tmp_path) == before


def test_keygen_with_a_key_already_there_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "evidence"
    assert cli("evidence", "keygen", "--state-dir", str(state)).returncode == 0
    before = tree(tmp_path)
    out = cli("evidence", "keygen", "--state-dir", str(state))
    assert out.returncode == 1 and out.stdout == ""
    assert "already has a sealing key; refusing to replace it" in one_line(out)
    assert tree(tmp_path) == before


def test_keygen_whose_key_cannot_be_printed_leaves_no_key(tmp_path: Path) -> None:
    """stdout on /dev/full: the verification key is lost, so the sealing key
    and the directories made for it go too."""
    state = tmp_path / "lib" / "evidence"
    with open("/dev/full", "w") as full:
        out = cli("evidence", "keygen", "--state-dir", str(state), stdout=full)
    assert out.returncode == 1
    assert one_line(out).endswith("no key was made")
    assert list(tmp_path.iterdir()) == []


# --- where the state directory came from ---------------------------------------


def test_a_config_file_state_dir_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "lib").write_text("a file where a directory should be")
    state = tmp_path / "lib" / "evidence"
    config = tmp_path / "tracehound.toml"
    config.write_text(
        f'[api]\nenabled = false\n\n[evidence]\nenabled = true\nstate_dir = "{state}"\n'
    )
    before = tree(tmp_path)
    out = cli("run", "--config", str(config))
    assert out.returncode == 2
    assert one_line(out) == (
        f"evidence.state_dir in {config}: cannot create {state}: {tmp_path / 'lib'} is not a"
        " directory"
    )
    given = cli("run", "--config", str(config), "--evidence", str(state))
    assert given.returncode == 2
    assert one_line(given).startswith(f"--evidence {state}: cannot create {state}: ")
    assert tree(tmp_path) == before


def test_a_symlink_as_evidence_is_refused_before_capture(tmp_path: Path) -> None:
    link = tmp_path / "evidence"
    link.symlink_to(tmp_path)
    out = cli("profile", "--evidence", str(link), "--", "/bin/true")
    assert out.returncode == 2
    assert one_line(out) == (
        f"--evidence {link}: {link} is a symlink to {tmp_path}; refusing to follow it"
    )
