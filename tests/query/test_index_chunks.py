"""A pool splits segments into byte ranges: each complete line exactly once."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.query.index_rows import read_chunk, row_of_line

GOLDEN = Path(__file__).parent.parent / "evidence" / "golden" / "evidence.ndjson"
LINES = GOLDEN.read_bytes().splitlines(keepends=True)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(range(len(LINES))), min_size=1, max_size=40),
    st.integers(min_value=1, max_value=5000),
    st.integers(min_value=0, max_value=300),
)
def test_ranges_that_tile_a_file_give_every_complete_line_once(
    picks: list[int], size: int, torn: int
) -> None:
    lines = [LINES[i] for i in picks]
    # A torn tail (a line being written) is never read.
    data = b"".join(lines) + LINES[0][: min(torn, len(LINES[0]) - 1)]
    with tempfile.NamedTemporaryFile() as handle:
        handle.write(data)
        handle.flush()
        rows, offsets, end = [], [], 0
        for low in range(0, len(data), size):
            chunk = read_chunk(handle.name, low, min(low + size, len(data)), 10)
            if chunk is None:
                continue
            assert chunk.start == end  # the ranges' lines follow each other
            end = chunk.end
            rows += [r[0] for r in chunk.rows]
            offsets += [(r[1], r[2]) for r in chunk.rows]
    expected = [row.seq for row in map(row_of_line, (line[:-1] for line in lines)) if row]
    assert rows == expected
    assert end == sum(map(len, lines))
    at = 0
    for line, (off, length) in zip(
        [line for line in lines if row_of_line(line[:-1])], offsets, strict=True
    ):
        at = data.index(line, at)
        assert (off, length) == (at, len(line) - 1)
        at += 1
