"""The argparse types of agent.commands.arguments, the input-file reader,
and that every numeric option of every subcommand uses them, with the
configuration schema's bounds."""

from __future__ import annotations

import argparse
import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import limits
from agent.cli import build_parser
from agent.commands.arguments import (
    PATTERN_TYPES,
    FloatRange,
    IntRange,
    PowerOfTwo,
    bounded_float,
    bounded_int,
    expect_head,
    power_of_two,
    shown,
)
from agent.config import CaptureConfig, ConfigError, EvidenceConfig, StreamConfig
from agent.evidence.canonical import MAX_SAFE_INTEGER
from agent.input_file import InputFileError, read_input_file


def refused(parse: object, text: str) -> str:
    assert callable(parse)
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        parse(text)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- bounded_int ---------------------------------------------------------------


def test_bounded_int_accepts_its_range() -> None:
    parse = bounded_int(1, 64)
    assert [parse(t) for t in ("1", "64", " 7 ", "+3", "007")] == [1, 64, 7, 3, 7]


@pytest.mark.parametrize(
    "text", ["0", "65", "-1", "1.5", "1e1", "1_0", "", " ", "abc", "0x10", "\u00b2", "٣", "nan"]
)
def test_bounded_int_refuses(text: str) -> None:
    assert refused(bounded_int(1, 64), text) == f"expected an integer from 1 to 64, got {text!r}"


def test_bounded_int_names_what_it_wants() -> None:
    message = refused(bounded_int(1, limits.MAX_PID, what="a pid"), "0")
    assert message == "expected a pid from 1 to 4194303, got '0'"


def test_bounded_int_refuses_huge_and_long_text_and_shortens_it() -> None:
    parse = bounded_int(0, limits.MAX_SEQ)
    assert parse(str(limits.MAX_SEQ)) == 2**53 - 1
    assert "got '9007199254740992'" in refused(parse, str(2**53))
    long = "9" * 5000  # past int()'s digit limit: still one short line
    message = refused(parse, long)
    assert message.endswith("got '" + "9" * 40 + "'...")


def test_bounded_int_of_a_u64() -> None:
    parse = bounded_int(1, limits.MAX_CGROUP_ID)
    assert parse(str(2**64 - 1)) == 2**64 - 1
    refused(parse, str(2**64))


def test_bounded_int_rejects_an_empty_range() -> None:
    with pytest.raises(ValueError):
        bounded_int(5, 4)


# --- bounded_float ---------------------------------------------------------------


def test_bounded_float_accepts_its_range() -> None:
    parse = bounded_float(0, 86400, unit="seconds")
    got = [parse(t) for t in ("0", "86400", "0.5", ".5", "5.", "1e3", "8.64E4", "-0")]
    assert got == [0.0, 86400.0, 0.5, 0.5, 5.0, 1000.0, 86400.0, 0.0]
    assert all(isinstance(v, float) for v in got)


@pytest.mark.parametrize(
    "text",
    ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e999", "-1e999", "-0.001", "86400.01",
     "1_0", "", "five", "0x1p3", "1e99999"],
)  # fmt: skip
def test_bounded_float_refuses(text: str) -> None:
    message = refused(bounded_float(0, 86400, unit="seconds"), text)
    assert message == f"expected 0 to 86400 seconds, got {text!r}"


def test_bounded_float_above_refuses_its_low_end() -> None:
    parse = bounded_float(0, 31622400, above=True, unit="seconds")
    assert parse("1e-9") == 1e-9
    assert parse("31622400") == 31622400.0
    for text in ("0", "0.0", "-0", "31622400.5", "nan"):
        message = refused(parse, text)
        assert message == f"expected more than 0 and at most 31622400 seconds, got {text!r}"


def test_bounded_float_shows_fractional_bounds_as_written() -> None:
    assert refused(bounded_float(0.5, 2.25), "3") == "expected 0.5 to 2.25, got '3'"


def test_bounded_float_rejects_a_bad_range() -> None:
    for low, high in ((1.0, 0.0), (0.0, math.inf), (math.nan, 1.0)):
        with pytest.raises(ValueError):
            bounded_float(low, high)


# --- power_of_two, expect_head, shown -------------------------------------------------


def test_power_of_two() -> None:
    parse = power_of_two(1 << 18)
    assert [parse(t) for t in ("1", "2", "1024", "262144")] == [1, 2, 1024, 262144]
    for text in ("0", "3", "1000", "-2", "524288", "1073741824", "4.0", "x"):
        assert refused(parse, text) == f"expected a power of two from 1 to 262144, got {text!r}"
    with pytest.raises(ValueError):
        power_of_two(1000)


def test_expect_head() -> None:
    digest = "ab" * 32
    assert expect_head(f"41:{digest.upper()}") == (41, digest)
    assert expect_head(f"{2**53 - 1}:{digest}") == (2**53 - 1, digest)
    for text in (f"{2**53}:{digest}", f"-1:{digest}", f"\u00b2:{digest}", digest, "1:abc", ""):
        assert refused(expect_head, text).startswith("expected SEQ:HASH, a sequence number")


def test_shown_is_one_short_quoted_line() -> None:
    assert shown("a\nb") == "'a\\nb'"
    assert shown("x" * 100) == repr("x" * 40) + "..."


# --- every numeric option uses them, with the schema's bounds ---------------------------


def _options() -> Iterator[tuple[str, argparse.Action]]:
    """(subcommand path, action) for every option of every parser."""

    def walk(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)
            else:
                yield parser.prog, action

    yield from walk(build_parser())


def test_every_typed_option_uses_a_bounded_type_and_documents_its_maximum() -> None:
    bounded = 0
    for prog, action in _options():
        if action.type is None:
            continue
        where = f"{prog} {'/'.join(action.option_strings)}"
        assert action.type in PATTERN_TYPES or isinstance(
            action.type, IntRange | FloatRange | PowerOfTwo
        ), f"{where}: type {action.type!r} is not from agent.commands.arguments"
        typ = action.type
        if isinstance(typ, IntRange | FloatRange | PowerOfTwo):
            high = typ.high
            shown_high = str(int(high)) if float(high).is_integer() else str(high)
            assert shown_high in (action.help or ""), f"{where}: --help does not say {high}"
            bounded += 1
    assert bounded >= 20  # run, profile (capture and evidence), evidence, snapshot, tail


def _type(prog: str, option: str) -> IntRange | FloatRange | PowerOfTwo:
    for where, action in _options():
        if where == prog and option in action.option_strings:
            assert isinstance(action.type, IntRange | FloatRange | PowerOfTwo)
            return action.type
    raise AssertionError(f"{prog} has no {option}")


@pytest.mark.parametrize("prog", ["tracehound run", "tracehound profile"])
@pytest.mark.parametrize(
    ("option", "section", "key"),
    [
        ("--ringbuf-pages", CaptureConfig, "ringbuf_pages"),
        ("--argv-max", CaptureConfig, "argv_max"),
        ("--evidence-segment-mb", EvidenceConfig, "segment_mb"),
        ("--evidence-segment-hours", EvidenceConfig, "segment_hours"),
        ("--evidence-retain-mb", EvidenceConfig, "retain_mb"),
        ("--evidence-checkpoint-every", EvidenceConfig, "checkpoint_every"),
    ],
)
def test_option_and_config_key_agree_on_the_maximum(
    prog: str, option: str, section: type, key: str
) -> None:
    """The largest value each accepts is the same, and one past it neither does."""
    parse = _type(prog, option)
    high = parse.high
    past = high * 2 if isinstance(parse, PowerOfTwo) else high + 1
    assert parse(str(high)) == high
    section(**{key: high})
    with pytest.raises(argparse.ArgumentTypeError):
        parse(str(past))
    with pytest.raises(ConfigError, match=key):
        section(**{key: past})


def test_run_only_options_agree_with_the_config() -> None:
    stats = _type("tracehound run", "--stats-interval")
    assert (stats.low, stats.high) == (0, limits.MAX_STATS_INTERVAL_S)
    CaptureConfig(stats_interval=stats.high)
    with pytest.raises(ConfigError):
        CaptureConfig(stats_interval=stats.high + 1)
    capacity = _type("tracehound run", "--stream-capacity")
    assert (capacity.low, capacity.high) == (1, limits.MAX_STREAM_CAPACITY)
    StreamConfig(capacity=capacity.high)
    with pytest.raises(ConfigError):
        StreamConfig(capacity=capacity.high + 1)


def test_the_seq_bound_is_the_chains() -> None:
    assert limits.MAX_SEQ == MAX_SAFE_INTEGER


# --- read_input_file -----------------------------------------------------------------


def test_reads_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_bytes(b"a = 1\n")
    assert read_input_file(path) == b"a = 1\n"
    exact = tmp_path / "exact"
    exact.write_bytes(b"x" * 100)
    assert read_input_file(exact, limit=100) == b"x" * 100


def test_refuses_one_byte_past_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "over"
    path.write_bytes(b"x" * 101)
    with pytest.raises(InputFileError, match=r"^larger than 100 bytes \(101 bytes\)$"):
        read_input_file(path, limit=100)


def test_refuses_a_huge_sparse_file_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(1 << 40)  # 1 TiB of holes: reading it would take hours
    started = time.monotonic()
    with pytest.raises(InputFileError, match=r"^larger than 1 MiB \(1099511627776 bytes\)$"):
        read_input_file(path)
    assert time.monotonic() - started < 1


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"^no such file$"):
        read_input_file(tmp_path / "nope")
    with pytest.raises(InputFileError, match=r"^not a regular file \(a directory\)$"):
        read_input_file(tmp_path)
    with pytest.raises(InputFileError, match=r"^cannot read: Not a directory$"):
        (tmp_path / "file").write_text("")
        read_input_file(tmp_path / "file" / "below")


@pytest.mark.parametrize(
    ("path", "kind"), [("/dev/zero", "a character device"), ("/dev/null", "a character device")]
)
def test_devices_are_refused_unopened(path: str, kind: str) -> None:
    with pytest.raises(InputFileError, match=rf"^not a regular file \({kind}\)$"):
        read_input_file(path)


def test_a_fifo_with_no_writer_returns_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.toml"
    link.symlink_to(fifo)
    for path in (fifo, link):
        started = time.monotonic()
        with pytest.raises(InputFileError, match=r"^not a regular file \(a FIFO\)$"):
            read_input_file(path)
        assert time.monotonic() - started < 1


def test_a_socket_is_refused(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(InputFileError, match=r"^not a regular file \(a socket\)$"):
            read_input_file(path)


def test_a_file_growing_while_read_never_gives_more_than_the_limit(tmp_path: Path) -> None:
    """A writer appends up to 4 MiB meanwhile; whatever the timing, the
    reader returns at most the limit or refuses, and refuses once it is past."""
    path = tmp_path / "growing"
    path.write_bytes(b"")

    def grow() -> None:
        with open(path, "ab") as f:
            while f.tell() < 4 << 20:
                f.write(b"x" * 4096)
                f.flush()

    writer = threading.Thread(target=grow)
    writer.start()
    outcomes = set()
    try:
        while writer.is_alive():
            try:
                data = read_input_file(path, limit=1 << 20)
            except InputFileError as err:
                outcomes.add(str(err).split(" (")[0])
            else:
                assert len(data) <= 1 << 20
                outcomes.add("read")
    finally:
        writer.join()
    assert outcomes <= {"read", "larger than 1 MiB"}
    with pytest.raises(InputFileError, match=r"^larger than 1 MiB \(4194304 bytes\)$"):
        read_input_file(path)
