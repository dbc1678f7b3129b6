"""agent.query.compact: one line per record, none forgeable by what the host named."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.evidence.log_reader import iter_events
from agent.evidence.types import TYPE_PREFIX
from agent.query.compact import compact_line
from agent.safetext import escape, escape_text

GOLDEN = Path(__file__).parent.parent / "evidence" / "golden" / "evidence.ndjson"
_SGR = re.compile(r"\x1b\[[0-9;]*m")
HOSTILE = [
    "a\nb",
    "x\x1b[31mred\x1b[0m",
    "fake  ok\n2026-01-01T00:00:00.000Z  -  1  init  exec /bin/sh  ok",
    "bidi\u202eevil\u2028sep",
    "c1\u009b31m",
    "nul\x00del\x7f",
    "raw\udcff\udc1b",  # bytes that are not UTF-8 (surrogateescape)
    "tab\tand space",
]


def _tokens(line: str) -> list[str]:
    """Split on runs of spaces that no backslash escapes (as ``ls -b`` text reads)."""
    tokens, current, escaped = [], "", False
    for char in line:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            current, escaped = current + char, True
        elif char == " ":
            if current:
                tokens.append(current)
            current = ""
        else:
            current += char
    return [*tokens, current] if current else tokens


def _logged(value: str) -> tuple[str, bool]:
    """``value`` as the log holds it: escape form if it has raw bytes."""
    if any(0xDC80 <= ord(c) <= 0xDCFF for c in value):
        return escape(value), True
    return value, False


def _event(kind: str, hostile: str, **data: Any) -> dict[str, Any]:
    text, escaped = _logged(hostile)
    base: dict[str, Any] = {
        "pid": 4711, "tid": 4711, "uid": 0, "gid": 0, "comm": text, "container": None,
        "cgroup_id": "1", "cgroup": "/", "ts_ns": "1", "redacted": [],
    }  # fmt: skip
    names = ["comm"] if escaped else []
    for key, value in data.items():
        if value == "HOSTILE":
            base[key] = text
            names.append(key)
        elif value == ["HOSTILE"]:
            base[key] = [text, text]
            names.append(key)
        else:
            base[key] = value
    if escaped:
        base["escaped"] = sorted(names)
    return {"id": "0" * 32, "type": TYPE_PREFIX + kind, "time": "2026-12-01T19:47:14.123456789Z",
            "data": base}  # fmt: skip


def _cases(hostile: str) -> list[dict[str, Any]]:
    endpoint = {"family": "unix", "address": _logged(hostile)[0], "port": 0}
    if _logged(hostile)[1]:
        endpoint["escaped"] = ["address"]
    return [
        _event("process.exec.v1", hostile, ret=0, argv=["HOSTILE"], exe="HOSTILE",
               filename="HOSTILE", args_cut=[], argv_more=False),
        _event("file.open.v1", hostile, op="open", ret=-13, path="HOSTILE", abs_path="HOSTILE",
               flags=0o1101),
        _event("file.rename.v1", hostile, op="rename", ret=0, path="HOSTILE", abs_path="",
               path2="HOSTILE", abs_path2="HOSTILE"),
        _event("network.connect.v1", hostile, op="connect", ret=-111, endpoint=endpoint),
        _event("fs.mount.v1", hostile, op="mount", syscall="mount", ret=0, args={"flags": 0},
               source="HOSTILE", target="HOSTILE"),
        _event("process.seen.v1", hostile, exe="HOSTILE"),
    ]  # fmt: skip


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_names_stay_on_one_line_in_their_columns(hostile: str) -> None:
    for event in _cases(hostile):
        line = compact_line(event)
        assert line.isprintable(), repr(line)  # no newline, ESC, C1, bidi or separator
        assert "\x1b" not in line and "\n" not in line
        tokens = _tokens(line)
        assert tokens[0] == "2026-12-01T19:47:14.123Z" and tokens[1] == "-"
        assert tokens[2] == "4711"
        # The comm is one token, escaped, whatever it holds; the result is last.
        assert tokens[3] == escape_text(hostile)
        expected = {"file.open.v1": "EACCES", "network.connect.v1": "ECONNREFUSED"}.get(
            event["type"].removeprefix(TYPE_PREFIX), "-" if "seen" in event["type"] else "ok"
        )
        assert tokens[-1] == expected, line
        assert len(re.findall(r"(?<!\\)  ", line)) >= 5  # the column gaps are ours alone
        coloured = compact_line(event, colour=True)
        assert _SGR.sub("", coloured) == line
        assert not _SGR.sub("", coloured).count("\x1b")


def test_what_happened() -> None:
    exec_line = compact_line(_event("process.exec.v1", "sh", ret=0, argv=["ls", "-la", "a b"],
                                    exe="/usr/bin/ls", args_cut=[], argv_more=False))  # fmt: skip
    assert exec_line.endswith("  sh               exec ls -la 'a b'  ok")
    opened = compact_line(_event("file.open.v1", "cat", op="open", ret=-2, path="x",
                                 abs_path="/etc/x", flags=0o1101))  # fmt: skip
    assert opened.endswith("open /etc/x w,creat,trunc  ENOENT")
    renamed = compact_line(_event("file.rename.v1", "mv", op="rename", ret=0, path="a",
                                  abs_path="/t/a", path2="b", abs_path2="/t/b"))  # fmt: skip
    assert renamed.endswith("rename /t/a -> /t/b  ok")
    v6 = {"family": "ipv6", "address": "::1", "port": 53}
    net = compact_line(_event("network.connect.v1", "dig", op="connect", ret=-115,
                              endpoint=v6, proto="udp"))  # fmt: skip
    assert net.endswith("connect [::1]:53 udp  EINPROGRESS")
    died = compact_line(_event("process.exit.v1", "x", exit_code=None, signal=11))
    assert died.endswith("exit signal SIGSEGV  -")
    ended = compact_line(_event("process.exit.v1", "x", exit_code=3, signal=None))
    assert ended.endswith("exit code 3  -")
    boxed = _event("process.fork.v1", "x", child_pid=9)
    boxed["data"]["container"] = {"id": "0123456789abcdef" * 4, "runtime": "docker"}
    assert compact_line(boxed).split()[1:3] == ["0123456789ab", "4711"]


def test_every_golden_record_is_one_printable_line(tmp_path: Path) -> None:
    (tmp_path / "segments").mkdir()
    shutil.copy(GOLDEN, tmp_path / "segments" / "0000000000000000.ndjson")
    lines = [compact_line(e.event) for e in iter_events(tmp_path)]
    assert len(lines) > 300
    assert all(line.isprintable() for line in lines)
    # The golden log's hostile comm a\nb is shown escaped, never as a break.
    assert any("  a\\nb  " in line for line in lines)
