"""Everything after the drain counts a folded event as the events it stands for.

The ledger (with repeats still held), the aggregating sink's books and
records, the streaming sink's drops, the --events lines, the metrics, and
the configuration and command-line settings that turn folding on and off.
"""

from __future__ import annotations

import argparse
import json

import msgspec
import pytest
import trio

from agent.capture.events import FileEvent, NetEvent, event_count
from agent.capture.fold import FoldStats
from agent.capture.ledger import Ledger
from agent.capture.session import CaptureStats
from agent.commands.options import add_capture_arguments, fold_from_args
from agent.config import ConfigError
from agent.config.load import apply_defaults
from agent.config.schema import CaptureConfig, Config
from agent.metrics import _stats_families
from agent.redact import Redactor
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.event_lines import EventLines
from agent.sinks.streaming import StreamingSink


def opened(path: str = "/etc/hosts", *, count: int = 1, ts: int = 10) -> FileEvent:
    last = 0 if count == 1 else ts + 1000
    return FileEvent(
        7, 7, ts, 0, 0, 1, "cat", "open", "openat", 3, -100, path, -100, "", 0, 0,
        count=count, last_ts_ns=last,
    )  # fmt: skip


def test_event_count_is_the_count_of_file_and_net_events_only() -> None:
    assert event_count(opened(count=41)) == 41
    net = NetEvent(1, 1, 0, 0, 0, 0, "c", "connect", -111, 3, None, 0, count=5, last_ts_ns=9)
    assert event_count(net) == 5
    assert event_count(opened()) == 1


def test_the_ledger_balances_with_repeats_held_and_says_how_many() -> None:
    led = Ledger()
    led.received["file"] = 100
    led.folding["file"] = 60
    books = led.account({"file": (100, 0)}, {"agg": {"file": (40, 0)}})
    assert books["file"].balanced and books["file"].folding == 60
    led.folding["file"] = 0  # flushed but never delivered: must not balance
    assert not led.account({"file": (100, 0)}, {"agg": {"file": (40, 0)}})["file"].balanced


async def test_the_aggregating_sink_adds_counts_to_books_and_records() -> None:
    sink = AggregatingSink()
    await sink.record(opened())
    await sink.record(opened(count=999, ts=20))
    assert sink.accounting()["aggregating"]["file"] == (1000, 0)
    [proc] = sink.finish().processes
    [record] = proc.files
    assert (record.count, record.first_ns) == (1000, 10)


async def test_a_dropped_folded_event_loses_all_it_stands_for() -> None:
    stream = StreamingSink(capacity=1, policy="drop")
    await stream.record(opened(count=3))
    await stream.record(opened(count=500))
    assert stream.accounting()["streaming"]["file"] == (3, 500)


def test_events_lines_carry_count_only_when_folded() -> None:
    lines = EventLines(lambda: Redactor.from_config([]))
    plain = lines.line(opened())
    assert b"count" not in plain and b"last_ts_ns" not in plain
    # Byte for byte what the line was before the fields existed.
    before = msgspec.json.encode(opened()).replace(b',"count":1,"last_ts_ns":0', b"") + b"\n"
    assert plain == before
    folded = json.loads(lines.line(opened(count=12, ts=5)))
    assert (folded["count"], folded["ts_ns"], folded["last_ts_ns"]) == (12, 5, 1005)


def test_fold_metrics_come_from_the_stats() -> None:
    fold = FoldStats(
        window_ms=100, capacity=8, keys=2, pending={"file": 4},
        folded={"file": 3, "net": 1}, absorbed={"file": 90, "net": 7}, overflow={"net": 2},
    )  # fmt: skip
    stats = CaptureStats(kinds={}, probes=[], balanced=True, errors={}, uptime_s=0.0, fold=fold)
    samples = {
        (s.name, s.labels.get("kind")): s.value
        for family in _stats_families(stats)
        for s in family.samples
        if s.name.startswith("tracehound_fold")
    }
    assert samples[("tracehound_fold_pending", "file")] == 4
    assert samples[("tracehound_fold_absorbed_total", "file")] == 90
    assert samples[("tracehound_fold_records_total", "net")] == 1
    assert samples[("tracehound_fold_overflow_total", "net")] == 2
    off = CaptureStats(kinds={}, probes=[], balanced=True, errors={}, uptime_s=0.0)
    assert not [f for f in _stats_families(off) if f.name.startswith("tracehound_fold")]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fold_window_ms": -1}, "capture.fold_window_ms: expected 0 (no folding) to 60000"),
        ({"fold_window_ms": 60001}, "capture.fold_window_ms: expected 0 (no folding) to 60000"),
        ({"fold_capacity": 0}, "capture.fold_capacity: expected 1 to 65536, got 0"),
        ({"fold_capacity": 65537}, "capture.fold_capacity: expected 1 to 65536, got 65537"),
    ],
)
def test_bad_fold_settings_are_refused_in_one_line(fields: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        CaptureConfig(**fields)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_capture_arguments(parser)
    return parser.parse_args(list(argv))


def test_fold_settings_come_from_the_file_unless_the_command_line_says() -> None:
    builtin = parsed()
    apply_defaults(builtin, Config())  # what run and profile do before reading options
    assert fold_from_args(builtin).window_ms == CaptureConfig().fold_window_ms == 100
    file = Config(capture=CaptureConfig(fold_window_ms=0, fold_capacity=17))
    args = parsed()
    apply_defaults(args, file)
    assert (fold_from_args(args).window_ms, fold_from_args(args).capacity) == (0, 17)
    assert not fold_from_args(args).enabled
    args = parsed("--fold-window-ms", "250")
    apply_defaults(args, file)
    assert fold_from_args(args).window_ms == 250


def test_the_command_line_refuses_a_window_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parsed("--fold-window-ms", "60001")
    assert "--fold-window-ms" in capsys.readouterr().err


def test_streaming_consumer_sees_the_folded_event_whole() -> None:
    async def main() -> FileEvent:
        stream = StreamingSink(capacity=4)
        await stream.record(opened(count=7))
        (got,) = stream.receive_channel.receive_nowait()
        assert isinstance(got, FileEvent)
        return got

    assert trio.run(main).count == 7
