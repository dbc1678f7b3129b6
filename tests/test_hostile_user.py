"""A hostile local user against a real daemon: the record stays whole and inert.

As uid 65534, a workload execs with argv that is not UTF-8 and holds
terminal escapes, names itself (comm) with such bytes, creates files whose
names hold ``\\xff``, newlines that draw a fake line, ANSI and C1 escapes,
and binds a UNIX socket with such a name. The daemon must stay ready; the
records must be in the log with every byte (escape form, reversible) and
verify; the snapshot JSON keeps the bytes, and its text form shows them
escaped so nothing can be forged.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.safetext import restore_json, to_bytes
from tests.conftest import TRACEHOUND
from tests.harness import Daemon, own_daemon, records, wait_until

NOBODY = 65534
FORGED_LINE = b"file open(read) shadow"
NAMES = [b"x\xff", b"n\n" + FORGED_LINE, b"\x1b[31mred\x1b[0m", b"csi\xc2\x9b2J", b"sp ace"]
ARGV = [b"arg\xff", b"\x1b]0;title\x07", b"two words", b"nl\nexec FAILED /bin/su"]
COMM = b"ev\xffil\x1b[2J"
SOCKET = b"sock\xff\nnet"

WORKLOAD = r"""
import ctypes, os, socket, subprocess, sys
d = os.fsencode(sys.argv[1])
libc = ctypes.CDLL(None)
libc.prctl(15, ctypes.c_char_p(COMM), 0, 0, 0)  # PR_SET_NAME: our comm
for name in NAMES:
    open(d + b"/" + name, "wb").close()
subprocess.run([b"/bin/true", *ARGV], check=True)
s = socket.socket(socket.AF_UNIX)
s.bind(d + b"/" + SOCKET)
s.close()
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with own_daemon(tmp_path) as d:
        d.start("--events", str(tmp_path / "events.ndjson"))
        yield d


def sse_capacity(daemon: Daemon) -> int:
    queues = daemon.get_json("/v1/stats")["queues"]
    return sum(q["capacity"] for q in queues if q["queue"] == "sse_clients")


def whole_lines(path: Path) -> list[bytes]:
    """The complete lines of a file another process is still writing (its
    last line may be cut where a write buffer ended)."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1].splitlines()


def names_in(tail_out: Path) -> set[bytes]:
    """The file paths a ``tracehound tail --type file`` printed, as bytes."""
    return {
        to_bytes(restore_json(json.loads(line))["data"]["path"]) for line in whole_lines(tail_out)
    }


def evented(root: Path) -> set[bytes]:
    """The file paths in the daemon's ``--events`` file, as bytes."""
    lines = whole_lines(root / "events.ndjson")
    return {
        to_bytes(event["path"])
        for event in (restore_json(json.loads(line)) for line in lines)
        if event.get("kind") == "file"
    }


def data_of(record: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = restore_json(record["body"]["data"])
    return data


def test_hostile_bytes_stay_data(kernel: None, daemon: Daemon, system_python: str) -> None:
    play = Path(tempfile.mkdtemp(prefix="hostile-", dir="/tmp"))
    os.chown(play, NOBODY, NOBODY)
    script = play / "w.py"
    script.write_text(
        f"COMM = {COMM!r}\nNAMES = {NAMES!r}\nARGV = {ARGV!r}\nSOCKET = {SOCKET!r}\n" + WORKLOAD
    )
    tail_out = daemon.root / "tail.ndjson"
    with open(tail_out, "wb") as sink:
        tail = subprocess.Popen(
            [*TRACEHOUND, "tail", "--socket", str(daemon.sock), "--type", "file"], stdout=sink
        )
        try:
            # The live tail sees only what comes after it subscribed: wait for
            # its buffer to exist (the sse_clients queue has a capacity then).
            wait_until(lambda: sse_capacity(daemon) > 0, "the tail to subscribe")
            done = subprocess.run(
                ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 system_python, str(script), str(play)],
                capture_output=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            wait_until(
                lambda: {os.fsencode(play) + b"/" + n for n in NAMES} <= names_in(tail_out),
                "the live tail to show every hostile name",
                30,
            )
        finally:
            tail.terminate()
            tail.wait(10)
    # The tail prints JSON a terminal cannot act on: escapes as \u, bytes restorable.
    shown = tail_out.read_bytes()
    assert b"\x1b" not in shown and b"\xc2\x9b" not in shown and b"\xff" not in shown
    # --events keeps every byte too.
    wait_until(
        lambda: {os.fsencode(play) + b"/" + n for n in NAMES} <= evented(daemon.root),
        "--events to hold every hostile name",
        30,
    )
    root = os.fsencode(play)
    wanted = {root + b"/" + name for name in NAMES}

    def logged() -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {"file": [], "exec": [], "bind": []}
        for record in records(daemon.state):
            kind = str(record["type"])
            if (
                not kind.startswith("dev.tracehound.")
                or record["body"]["data"].get("uid") != NOBODY
            ):
                continue
            data = data_of(record)
            if kind.endswith("file.open.v1") and to_bytes(data["path"]) in wanted:
                found["file"].append(data)
            elif kind.endswith("process.exec.v1") and data["argv"][:1] == ["/bin/true"]:
                found["exec"].append(data)
            elif kind.endswith("network.bind.v1"):
                found["bind"].append(data)
        return found

    wait_until(
        lambda: all(len(v) >= (len(NAMES) if k == "file" else 1) for k, v in logged().items()),
        "the hostile records in the log",
        30,
    )
    found = logged()
    assert {to_bytes(d["path"]) for d in found["file"]} == wanted
    assert {to_bytes(d["comm"]) for d in found["file"]} == {COMM[:15]}
    assert [to_bytes(a) for a in found["exec"][0]["argv"][1:]] == ARGV
    assert to_bytes(found["bind"][0]["endpoint"]["address"]) == root + b"/" + SOCKET

    assert daemon.status("/readyz")[0] == 200, daemon.log()
    verify = subprocess.run(
        [*TRACEHOUND, "evidence", "verify", str(daemon.state)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # The snapshot keeps every byte (escape form, restored) ...
    full = restore_json(json.loads(daemon.curl("/v1/snapshot").stdout))
    paths = {to_bytes(f["path"]) for p in full["processes"] for f in p["files"]}
    assert wanted <= paths
    # ... and its text form shows every field escaped: nothing forged, no escape.
    text = subprocess.run(
        [*TRACEHOUND, "snapshot", "--text", "--socket", str(daemon.sock)],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert b"\x1b" not in out and b"\xc2\x9b" not in out and b"\xff" not in out
    assert not any(line.strip().startswith(FORGED_LINE) for line in out.splitlines())
    assert b"x\\377" in out
    assert b"n\\nfile\\ open(read)\\ shadow" in out
    assert b"\\033[31mred\\033[0m" in out
    assert b"$'arg\\377' $'\\033]0;title\\a' 'two words' $'nl\\nexec FAILED /bin/su'" in out
