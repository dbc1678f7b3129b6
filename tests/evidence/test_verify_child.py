"""The daemon's background verify runs in a child process: same report as
in-process, a broken log reported broken, an unreadable one a clear 503."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from agent.api.app import _verify_in_child
from agent.api.http import HttpError
from agent.evidence.layout import segment_files
from agent.evidence.store import EvidenceStore
from agent.evidence.verify import verify_extent


def _log(state: Path) -> list[tuple[Path, int]]:
    with EvidenceStore(state) as store:
        for n in range(50):
            store.append("note", {"n": n})
        store.commit()
    return [(path, path.stat().st_size) for _, path in segment_files(state / "segments")]


def test_the_child_reports_what_an_in_process_verify_reports(tmp_path: Path) -> None:
    extent = _log(tmp_path / "log")
    report = trio.run(_verify_in_child, extent)
    assert report == verify_extent(extent)
    assert report.ok and report.records == verify_extent(extent).records > 50


def test_a_changed_record_is_a_break_in_the_child_too(tmp_path: Path) -> None:
    extent = _log(tmp_path / "log")
    path, size = extent[0]
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"n":7}', b'"n":8}', 1))
    report = trio.run(_verify_in_child, [(path, size)])
    assert not report.ok and report.first_break is not None
    assert report == verify_extent([(path, size)])


def test_a_log_gone_meanwhile_is_a_503_not_a_broken_chain(tmp_path: Path) -> None:
    extent = _log(tmp_path / "log")
    for path, _ in extent:
        path.unlink()
    with pytest.raises(HttpError) as info:
        trio.run(_verify_in_child, extent)
    assert info.value.status == 503
