"""Absolute paths on file events, on the real kernel.

A workload (tests/workloads/paths.py) chdirs, opens relative names, opens
with a dirfd, goes through a symlinked directory, renames, unlinks, mkdirs,
chmods by fd, reaches /proc, and makes a path of ~3000 bytes and one beyond
4096, all inside a tmpfs of its own (the walk crosses mounts). Every fact
must come with the absolute path the kernel used; the one beyond 4096 bytes
is cut and says so. With enrichment off (the layout test hook) or
resolution turned off, the absolute path is empty and flagged, never
guessed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.capture import kinds
from agent.capture.events import FileEvent
from agent.capture.loader import LoadedCapture, LoadOptions, compile_flags, load
from agent.commands.options import add_capture_arguments, load_options_from_args
from agent.config import Config, apply_defaults
from agent.config.schema import CaptureConfig

WORKLOAD = Path(__file__).resolve().parent / "workloads" / "paths.py"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "mnt"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tracehound-test", str(root)],
                   check=True)  # fmt: skip
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


def _file_events(capture: LoadedCapture, pid: int) -> list[FileEvent]:
    time.sleep(0.1)
    ring = capture.mapped_ring()
    try:
        events = [capture.decoder.decode(r) for r in ring.read(1_000_000)]
    finally:
        ring.close()
    return [e for e in events if isinstance(e, FileEvent) and e.pid == pid]


def _run(
    capture: LoadedCapture, system_python: str, root: Path, tmp: Path
) -> tuple[dict[str, object], list[FileEvent]]:
    facts_file = tmp / "facts.json"
    subprocess.run([system_python, str(WORKLOAD), str(facts_file), str(root)], check=True)
    facts = json.loads(facts_file.read_text())
    return facts, _file_events(capture, int(facts["pid"]))


def _key(e: FileEvent) -> tuple[str, str, str]:
    return (kinds.file_operation(e.op, e.flags), e.path, e.path2)


def test_every_file_fact_carries_the_absolute_path_the_kernel_used(
    kernel: None, system_python: str, tmpfs: Path, tmp_path: Path
) -> None:
    capture = load(LoadOptions(), cache_dir=tmp_path / "cache")
    try:
        assert capture.layout_problem == ""
        facts, events = _run(capture, system_python, tmpfs, tmp_path)
    finally:
        capture.close()
    by_key: dict[tuple[str, str, str], list[FileEvent]] = {}
    for e in events:
        by_key.setdefault(_key(e), []).append(e)
    seen = []
    for op, path, path2, want, want2 in facts["facts"]:  # type: ignore[union-attr]
        found = by_key.get((op, path, path2))
        assert found, f"no {op} of {path!r} {path2!r} in {sorted(by_key)}"
        e = found[0]
        exact = e.abs_flags & ~kinds.PATH_JOINED
        lexical = ".." in want.split("/")
        assert (e.abs_path, exact) == (want, kinds.PATH_LEXICAL if lexical else 0), (op, path)
        if path2:
            assert (e.abs_path2, e.abs2_flags & ~kinds.PATH_JOINED) == (want2, 0), (op, path2)
        seen.append((op, e.abs_path))
    # What the kernel read from the file itself vs what was joined to a base:
    opened = [e for e in events if e.op == "open" and e.ret >= 0]
    assert opened and all(not e.abs_flags & kinds.PATH_JOINED for e in opened)
    failed = [e for e in events if e.op == "open" and e.path == "missing"]
    assert failed and failed[0].abs_flags == kinds.PATH_JOINED
    # A name that could not be read: nothing joined, and said so.
    [null] = [e for e in events if e.op == "unlink" and e.ret == -14]
    assert (null.path, null.abs_path, null.abs_flags) == ("", "", kinds.PATH_NO_NAME)
    [null2] = [e for e in events if e.op == "rename" and e.ret == -14]
    assert (null2.abs_path, null2.abs_flags) == (
        f"{facts['root']}/efault-source",
        kinds.PATH_JOINED,
    )
    assert (null2.abs_path2, null2.abs2_flags) == ("", kinds.PATH_NO_NAME)
    # ~3000 bytes, whole; beyond 4096, cut and flagged, its tail right.
    deep = str(facts["deep"])
    assert len(deep) > 3000 and ("open", deep) in seen
    deeper = str(facts["deeper"])
    [cut] = [e for e in events if e.path == "deeper.txt"]
    assert cut.abs_flags & kinds.PATH_CUT
    assert len(cut.abs_path) <= 4096 and deeper.endswith(cut.abs_path)
    assert len(cut.abs_path) > 3000


@pytest.mark.parametrize(
    ("setting", "flag"),
    [("layout skew", kinds.PATH_NO_LAYOUT), ("resolve_paths off", kinds.PATH_OFF)],
)
def test_unresolved_paths_are_empty_and_flagged(
    kernel: None,
    system_python: str,
    tmpfs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    flag: int,
) -> None:
    options = LoadOptions()
    if setting == "layout skew":
        monkeypatch.setenv("TRACEHOUND_TEST_LAYOUT_SKEW", "fs_struct.pwd=16")
    else:
        options = LoadOptions(resolve_paths=False)
    capture = load(options, cache_dir=None)
    try:
        assert (capture.layout_problem != "") == (setting == "layout skew")
        facts, events = _run(capture, system_python, tmpfs, tmp_path)
    finally:
        capture.close()
    assert len(events) >= len(facts["facts"])  # type: ignore[arg-type]
    for e in events:
        # A symlink's path is the link's text, never resolved (no flags):
        # only its new link is a path the kernel used.
        assert (e.abs_path, e.abs_flags) == ("", 0 if e.op == "symlink" else flag), e
        if e.path2:
            assert (e.abs_path2, e.abs2_flags) == ("", flag), e
    # The paths as passed are all there still.
    assert {"link/f1", "f2", "missing", "sub/f1b"} <= {e.path for e in events}


def test_resolve_paths_comes_from_the_file_unless_the_command_line_says() -> None:
    def options(file: Config, *argv: str) -> LoadOptions:
        parser = argparse.ArgumentParser()
        add_capture_arguments(parser)
        args = parser.parse_args(list(argv))
        apply_defaults(args, file)  # what run and profile do before reading options
        return load_options_from_args(args, scoped=False)

    assert options(Config()).resolve_paths is True
    off = Config(capture=CaptureConfig(resolve_paths=False))
    assert options(off).resolve_paths is False
    assert options(off, "--resolve-paths").resolve_paths is True
    assert options(Config(), "--no-resolve-paths").resolve_paths is False
    # Compiled in as a constant: a different program (and cache key).
    flags = compile_flags(LoadOptions(resolve_paths=False), [])
    assert "-DTH_RESOLVE_PATHS=0" in flags
    assert "-DTH_RESOLVE_PATHS=1" in compile_flags(LoadOptions(), [])
