"""Arbitrary bytes in argv, paths, comm and sun_path, through every encoder.

Whoever runs on the host chooses these bytes. For each encoder: nothing
raises, and where the form promises it (the JSON escape form of
agent.safetext) the original bytes come back; the text forms hold no raw
control character, no raw space inside a field and no lone surrogate.
Records are built as the kernel writes them (wire layout) and decoded by
the real decoder, so the whole path from the ring buffer is covered.
"""

from __future__ import annotations

import socket
import struct
import subprocess
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.api.client import SseParser
from agent.api.live import record_event
from agent.capture.events import ExecEvent, FileEvent, NetEvent
from agent.capture.kinds import FROM_FILE, FROM_NONE
from agent.capture.wire import (
    COMM_LEN,
    EXEC_BODY,
    HEADER,
    KIND_EXEC,
    KIND_FILE,
    KIND_NET,
    NET_BODY,
    PATH_LEN,
    SOCKADDR_LEN,
    WireDecoder,
)
from agent.evidence.canonical import canonical
from agent.evidence.mapper import Mapper, decode
from agent.evidence.ocsf import to_ocsf
from agent.evidence.store import EvidenceStore
from agent.evidence.types import Anchor
from agent.evidence.verify import verify_store
from agent.redact import Redactor
from agent.safetext import (
    escape_text,
    restore_json,
    shell_join,
    shell_quote,
    terminal_safe_json,
    to_bytes,
    unescape,
)
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.event_lines import EventLines
from agent.sinks.profile import decode_profile, encode_profile, render_text
from agent.sinks.redacted_profile import redact_profile
from tests.file_records import file_body

ANCHOR = Anchor(boot_id="boot", wall_ns=1_700_000_000_000_000_000, boottime_ns=5 * 10**12)
NO_RULES = Redactor([])
ARGV_MAX = 4
ARG_LEN = 32
DECODER = WireDecoder(argv_max=ARGV_MAX, arg_len=ARG_LEN, syscall_names={257: "openat"})

# Any bytes but NUL (the kernel's strings end at the first one), biased
# towards what breaks things: invalid UTF-8, controls, escapes, quotes.
nasty = st.sampled_from(
    [b"\xff", b"\xc3", b"\x1b[31m", b"\n", b"\r", b"\t", b" ", b"\\", b"'", b'"', b"\xc2\x9b",
     b"\xe2\x80\xae", b"$(", b"`", b"\xed\xa0\x80", b"-> /etc/shadow", b"%", b"\x7f"]
)  # fmt: skip
chunk = st.one_of(st.binary(min_size=1, max_size=8), nasty).map(lambda b: b.replace(b"\0", b"x"))
raw = st.lists(chunk, max_size=6).map(b"".join)


def cstr(data: bytes, size: int) -> bytes:
    return data[: size - 1].ljust(size, b"\0")


def header(kind: int, comm: bytes) -> bytes:
    return HEADER.pack(kind, 4242, 5 * 10**12 + 1, 4242, 1000, 1000, 0, 7, cstr(comm, COMM_LEN))


def exec_record(comm: bytes, filename: bytes, argv: list[bytes]) -> bytes:
    area = b"".join(a + b"\0" for a in argv)
    cwd, exe = b"/" + filename, b"/" + comm
    body = EXEC_BODY.pack(0, 0, 0, 1, 0, 0, 0, len(filename), len(area), len(cwd), len(exe),
                          0, 0, 0)  # fmt: skip
    data = header(KIND_EXEC, comm) + body + area + filename + cwd + exe
    return data.ljust((len(data) + 7) & ~7, b"\0")


def file_record(comm: bytes, path: bytes, path2: bytes) -> bytes:
    """A rename (path2) or an open, resolved to the same hostile bytes (a
    dentry's name is chosen by whoever made the file)."""
    op = 3 if path2 else 1
    body = file_body(
        op=op, path=path, path2=path2, abs_path=path, abs_path2=path2, abs_flags=0,
        abs_from=FROM_FILE, abs2_from=FROM_FILE if path2 else FROM_NONE,
    )  # fmt: skip
    return header(KIND_FILE, comm) + body


def unix_record(comm: bytes, sun_path: bytes) -> bytes:
    sockaddr = struct.pack("<H", socket.AF_UNIX) + sun_path[:107]
    body = NET_BODY.pack(0, 1, 3, len(sockaddr), 0, 0, 0, 0, sockaddr.ljust(SOCKADDR_LEN, b"\0"))
    return header(KIND_NET, comm) + body


def kept(data: bytes, size: int) -> bytes:
    """What of ``data`` a field of ``size`` bytes keeps."""
    return data[: size - 1]


@settings(max_examples=150, deadline=None)
@given(comm=raw, filename=raw, argv=st.lists(raw, min_size=1, max_size=ARGV_MAX), path=raw)
def test_evidence_records_keep_every_byte(
    comm: bytes, filename: bytes, argv: list[bytes], path: bytes
) -> None:
    mapper = Mapper(host="h", anchor=ANCHOR, redactor=NO_RULES)
    mapper.anchor_record()
    exec_event = DECODER.decode(exec_record(comm, filename, argv))
    file_event = DECODER.decode(file_record(comm, path, path))
    assert isinstance(exec_event, ExecEvent) and isinstance(file_event, FileEvent)
    for event in (exec_event, file_event):
        record = mapper.map(event)
        line = record.body  # the bytes hashed and stored
        assert line == canonical(msgspec.json.decode(line))
        back = restore_json(decode(line).data)
        assert to_bytes(back["comm"]) == kept(comm, COMM_LEN)
        if isinstance(event, ExecEvent):
            assert to_bytes(back["filename"]) == kept(filename, PATH_LEN)
            assert [to_bytes(a) for a in back["argv"]] == [kept(a, ARG_LEN) for a in argv]
            assert to_bytes(back["cwd"]) == b"/" + filename
            assert to_bytes(back["exe"]) == b"/" + comm
        else:
            assert to_bytes(back["path"]) == kept(path, PATH_LEN)
        projected = to_ocsf(record.event)
        assert projected is not None
        msgspec.json.encode(projected)  # valid Unicode all through
        if isinstance(event, FileEvent):  # OCSF keeps the bytes too, named as escaped
            shown = projected["file"]["path"]
            if "path" in projected.get("unmapped", {}).get("escaped", []):
                shown = unescape(shown)
            assert to_bytes(shown) == kept(path, PATH_LEN)
        # SSE framing carries the same canonical bytes, whatever is in them.
        messages = SseParser().feed(record_event(line, record.event.type, record.event.id))
        assert [m.data.encode() for m in messages] == [line]


@settings(max_examples=100, deadline=None)
@given(comm=raw, sun_path=raw)
def test_unix_socket_paths_keep_every_byte(comm: bytes, sun_path: bytes) -> None:
    event = DECODER.decode(unix_record(comm, sun_path))
    assert isinstance(event, NetEvent) and event.endpoint is not None
    mapper = Mapper(host="h", anchor=ANCHOR, redactor=NO_RULES)
    mapper.anchor_record()
    data = restore_json(decode(mapper.map(event).body).data)
    address = data["endpoint"]["address"]
    want = sun_path[:107].split(b"\0", 1)[0]
    assert to_bytes(address) == want


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(comm=raw, filename=raw, argv=st.lists(raw, min_size=1, max_size=ARGV_MAX), path=raw)
def test_profile_and_event_lines_keep_every_byte_and_text_is_inert(
    comm: bytes, filename: bytes, argv: list[bytes], path: bytes
) -> None:
    events = [
        DECODER.decode(exec_record(comm, filename, argv)),
        DECODER.decode(file_record(comm, path, path)),
    ]
    sink = AggregatingSink()
    for event in events:
        sink.apply(event)
    profile = redact_profile(sink.snapshot(), NO_RULES)
    back = decode_profile(encode_profile(profile))
    assert back == profile  # lossless through the escape form
    # Redacted with the built-in rules: still encodes, whatever the bytes.
    decode_profile(encode_profile(redact_profile(sink.snapshot(), Redactor.builtin())))
    lines = EventLines(lambda: NO_RULES)
    for event in events:
        line = lines.line(event)
        decoded = restore_json(msgspec.json.decode(line))
        assert decoded["comm"] == event.comm
        if isinstance(event, ExecEvent):
            assert tuple(decoded["argv"]) == event.argv
            assert decoded["filename"] == event.filename
        else:
            assert decoded["path"] == event.path
    text = render_text(profile)
    for ch in text:
        assert ch == "\n" or ch.isprintable(), repr(ch)
    for line in text.splitlines():
        assert "\x1b" not in line
    # One field, one token: an escaped path has no raw space.
    assert " " not in unescaped_chars(escape_text(events[1].path))  # type: ignore[union-attr]


def unescaped_chars(text: str) -> str:
    """The characters of escaped text that are not part of an escape."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def test_shell_words_give_the_original_bytes_back_in_bash(tmp_path: Path) -> None:
    words = [
        "plain", "a b", "it's", "x\udcff", "\x1b[31mred", "line\nbreak", "tab\tq",
        "back\\slash", "$(id)", "`id`", "\u202eevil", "\u009bcsi", "", "-", "中文",
    ]  # fmt: skip
    script = tmp_path / "words.sh"
    script.write_bytes(
        b"for w in " + shell_join(words).encode() + b'; do printf "%s\\0" "$w"; done\n'
    )
    out = subprocess.run(["bash", str(script)], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [to_bytes(w) for w in words]
    for word in words:
        quoted = shell_quote(word)
        assert all(ch.isprintable() for ch in quoted), quoted


def test_terminal_safe_json_keeps_the_value() -> None:
    data = msgspec.json.encode({"a": "x\u009b[2J\u202e\u2028y", "b": ["\u0085"]})
    safe = terminal_safe_json(data)
    assert msgspec.json.decode(safe) == msgspec.json.decode(data)
    assert safe.isascii()


def test_a_log_of_hostile_records_verifies(tmp_path: Path) -> None:
    mapper = Mapper(host="h", anchor=ANCHOR, redactor=Redactor.builtin())
    records = [mapper.anchor_record()]
    for name in (b"\xff\xfe", b"a\nfile open(read) /etc/shadow", b"\x1b]0;pwned\x07"):
        records.append(mapper.map(DECODER.decode(file_record(b"ev\xffil", name, b""))))
    with EvidenceStore(tmp_path / "log") as store:
        for record in records:
            store.append_body(record.event.type, record.body)
    assert verify_store(tmp_path / "log").ok


def test_redacting_a_profile_copies_only_what_changed() -> None:
    """A snapshot of a busy host is mostly records nothing is redacted in:
    those are kept as they are (no copies, no memory peak), the rest change."""
    sink = AggregatingSink()
    secret = "ghp_R4nd0mFakeT0kenForTests0123456789abcd"
    for path in ("/etc/hostname", f"/tmp/{secret}"):
        sink.apply(DECODER.decode(file_record(b"app", path.encode(), b"")))
    profile = sink.snapshot()
    redacted = redact_profile(profile, Redactor.builtin())
    before, after = profile.processes[0].files, redacted.processes[0].files
    kept = [a for a, b in zip(before, after, strict=True) if a is b]
    assert [f.path for f in kept] == ["/etc/hostname"]
    assert secret not in repr(redacted) and secret in repr(profile)
    snapshot = sink.snapshot()
    plain = redact_profile(snapshot, NO_RULES)  # no rule: nothing changes, nothing is copied
    assert all(a is b for a, b in zip(plain.processes, snapshot.processes, strict=True))
