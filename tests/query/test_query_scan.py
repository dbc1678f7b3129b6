"""agent.query.scan and agent.query.match on the golden log, split into
segments, against a brute-force scan written here from the filter's definition."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.evidence.canonical import canonical
from agent.query.filter import EventFilter, cursor_after
from agent.query.parse import parse_filter
from agent.query.scan import newest, scan, search
from tests.query.brute import brute

GOLDEN = Path(__file__).parent.parent / "evidence" / "golden" / "evidence.ndjson"
NOW = 1_764_000_000_123_456_789


def _canonical(record: dict[str, Any]) -> bytes:
    """A chain line as the store writes it (sorted keys, no spaces)."""
    return canonical(record) + b"\n"


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden log cut into segments of 37 lines."""
    root = tmp_path_factory.mktemp("golden")
    (root / "segments").mkdir()
    lines = GOLDEN.read_bytes().splitlines(keepends=True)
    for index in range(0, len(lines), 37):
        name = f"{index // 37:016d}.ndjson"
        (root / "segments" / name).write_bytes(b"".join(lines[index : index + 37]))
    # The golden forks' children do nothing: give 1010's child 1110 (and its
    # own child) some records, so a tree is more than its root.
    opens = [json.loads(line) for line in lines if b'"type":"dev.tracehound.file.open.v1"' in line]
    fork = next(json.loads(line) for line in lines if b'"child_pid":1110' in line)
    fork["body"]["data"].update(pid=1110, child_pid=7777)
    extra = [opens[0], opens[1], fork, opens[2], opens[3]]
    seq = json.loads(lines[-1])["seq"]
    for pid, record in zip((1110, 1110, 1110, 7777, 7777), extra, strict=True):
        seq += 1
        record["seq"], record["body"]["data"]["pid"] = seq, pid
    (root / "segments" / f"{len(lines) // 37 + 1:016d}.ndjson").write_bytes(
        b"".join(_canonical(r) for r in extra)
    )
    return root


FILTERS: list[dict[str, list[str]]] = [
    {},
    {"type": ["file"]},
    {"type": ["process.exec", "network"]},
    {"since": ["2025-11-24T16:00:00.5Z"]},
    {"until": ["2025-11-24T16:00:00.3Z"]},
    {"since": ["2025-11-24T16:00:00.4Z"], "until": ["2025-11-24T16:00:00.6Z"]},
    {"since": ["2025-11-24T16:10:00Z"]},
    {"since": ["2025-11-24T17:00:00.45+01:00"], "until": ["2025-11-24T15:30:00.7-00:30"]},
    {"since": ["2030-01-01T00:00:00Z"]},
    {"pid": ["1010"]},
    {"pid": ["1010"], "tree": ["true"]},
    {"pid": ["1020"], "tree": ["true"], "type": ["process"]},
    {"comm": ["curl"]},
    {"comm": ["a\nb"]},
    {"comm": ["x\udcff"]},
    {"comm": ["x\\xff"]},  # the escape form's text: not the host's comm
    {"exe": ["/usr/bin/curl"]},
    {"exe": ["/usr/bin/sshd"], "type": ["file"]},
    {"path": ["/srv/*"]},
    {"path": ["*libm.so.6"], "type": ["file.rename"]},
    {"path": ["/tmp/x\udcff"]},
    {"path": ["/tmp/x?"]},  # one character: the byte that was not UTF-8
    {"path": ["/usr/bin/*"]},  # an exec's executable is one of its paths
    {"container": ["0123456789ab"]},
    {"container": ["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]},
    {"remote": ["22"]},
    {"remote": ["10.0.0.0/8"]},
    {"remote": ["[fe80::1]:22"]},
    {"uid": ["1000"]},
    {"uid": ["65534"], "comm": ["python3"], "since": ["2025-11-24T16:00:00.2Z"]},
]


@pytest.mark.parametrize("values", FILTERS, ids=[repr(f) for f in FILTERS])
def test_each_filter_matches_the_brute_force_scan(
    state: Path, values: dict[str, list[str]]
) -> None:
    flt = parse_filter(values, now_ns=NOW)
    expected = brute(state, flt)
    page = search(state, flt, limit=100_000)
    assert [e.seq for e in page.events] == expected
    assert page.next_cursor is None
    # Pages of 7 add up to it, no gap, no repeat; each full page has a cursor.
    seen: list[int] = []
    after = -1
    while True:
        part = search(state, flt, after_seq=after, limit=7)
        seen += [e.seq for e in part.events]
        if part.next_cursor is None:
            break
        assert part.next_cursor == cursor_after(part.events[-1].seq) and len(part.events) == 7
        after = part.events[-1].seq
    assert seen == expected
    assert [e.seq for e in newest(state, flt, limit=5)] == expected[-5:]


def test_the_filters_select_something(state: Path) -> None:
    """The table above is not vacuous: most filters pick some but not all."""
    everything = len(brute(state, EventFilter()))
    sizes = [len(brute(state, parse_filter(v, now_ns=NOW))) for v in FILTERS[1:]]
    assert sum(0 < n < everything for n in sizes) >= len(sizes) - 3, sizes
    tree = brute(state, parse_filter({"pid": ["1010"], "tree": ["1"]}, now_ns=NOW))
    assert len(tree) > len(brute(state, parse_filter({"pid": ["1010"]}, now_ns=NOW)))


def test_a_torn_tail_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "segments").mkdir()
    lines = GOLDEN.read_bytes().splitlines(keepends=True)
    whole = tmp_path / "segments" / "0000000000000000.ndjson"
    whole.write_bytes(b"".join(lines[:-1]))
    expected = brute(tmp_path, EventFilter())
    whole.write_bytes(b"".join(lines[:-1]) + lines[-1][:-40])  # the last line half written
    assert [e.seq for e in search(tmp_path, EventFilter(), limit=100_000).events] == expected


def test_the_index_answers_as_the_scan_on_a_log_with_reused_pids(
    state: Path, tmp_path: Path
) -> None:
    """The golden log holds its run twice: every child pid is forked again
    by processes of the second run. The index's tree (forks replayed in log
    order) must give the scan's answer for every root, page by page."""
    import shutil

    from agent.query.index import query_index
    from agent.query.index_writer import reindex

    copy = tmp_path / "state"
    shutil.copytree(state, copy)
    # Then an outsider (pid 5555) forks 1110 again and the new 1110 opens a
    # file: not 1010's tree any more; and 1110's old child 7777 is reused too.
    segments = sorted((copy / "segments").iterdir())
    last = [json.loads(line) for line in segments[-1].read_bytes().splitlines()]
    fork = next(r for r in last if r["type"] == "dev.tracehound.process.fork.v1")
    opened = next(r for r in last if r["type"] == "dev.tracehound.file.open.v1")
    seq = last[-1]["seq"]
    extra = []
    for record, pid, child in ((fork, 5555, 1110), (opened, 1110, None), (fork, 5555, 7777),
                               (opened, 7777, None), (fork, 1010, 1110), (opened, 1110, None)):  # fmt: skip
        seq += 1
        copied = json.loads(json.dumps(record))
        copied["seq"], copied["body"]["data"]["pid"] = seq, pid
        if child is not None:
            copied["body"]["data"]["child_pid"] = child
        extra.append(copied)
    name = f"{int(segments[-1].stem) + 1:016d}.ndjson"
    (copy / "segments" / name).write_bytes(b"".join(_canonical(r) for r in extra))
    assert reindex(copy).records > 0
    lines = [json.loads(line) for path in sorted((copy / "segments").iterdir())
             for line in path.read_bytes().splitlines()]  # fmt: skip
    forks = [r["body"]["data"] for r in lines if r["type"] == "dev.tracehound.process.fork.v1"]
    children = [f["child_pid"] for f in forks]
    assert len(children) > len(set(children))  # pids reused: the case to get right
    roots = sorted({f["pid"] for f in forks} | set(children))
    for root in roots:
        for types in (frozenset(), frozenset({"dev.tracehound.file.open.v1"})):
            flt = EventFilter(pid=root, tree=True, types=types)
            expected = [e.seq for e in scan(copy, flt, after_seq=-1, limit=10**9)]
            found = query_index(copy, flt, after_seq=None, limit=10**9)
            assert found is not None and [e.seq for e in found] == expected, flt
            paged: list[int] = []
            after: int | None = None
            while page := query_index(copy, flt, after_seq=after, limit=3):
                paged += [e.seq for e in page]
                after = page[-1].seq
            assert paged == expected, flt


@pytest.fixture(scope="module")
def indexed_copy(state: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden log, indexed."""
    import shutil

    from agent.query.index_writer import reindex

    copy = tmp_path_factory.mktemp("indexed") / "state"
    shutil.copytree(state, copy)
    assert reindex(copy).records == len(brute(state, EventFilter()))
    return copy


@pytest.mark.parametrize("values", FILTERS, ids=[repr(f) for f in FILTERS])
def test_the_index_answers_each_filter_as_the_brute_force_scan(
    state: Path, indexed_copy: Path, values: dict[str, list[str]]
) -> None:
    """Every filter of the table, asked of the index (exe included: its
    forks and execs replayed in log order), gives the brute force's seqs;
    only a filter whose text is not valid Unicode is left to the scan."""
    from agent.query.index import query_index

    copy = indexed_copy
    flt = parse_filter(values, now_ns=NOW)
    found = query_index(copy, flt, after_seq=None, limit=10**9)
    texts = [flt.comm, flt.exe, flt.path, flt.container]
    if any(t is not None and "\udcff" in t for t in texts):
        assert found is None  # the scan answers it
        return
    assert found is not None, "the index declined a filter it holds"
    assert [e.seq for e in found] == brute(state, flt)
