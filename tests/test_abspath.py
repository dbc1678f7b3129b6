"""Joining a name to the base directory the kernel resolved (agent.capture.abspath). Pure."""

from __future__ import annotations

import pytest

from agent.capture import kinds
from agent.capture.abspath import absolute, join


@pytest.mark.parametrize(
    ("base", "name", "want", "flags"),
    [
        ("/srv/w", "a/b", "/srv/w/a/b", 0),
        ("/srv/w", "/etc/passwd", "/etc/passwd", 0),  # absolute: the base is ignored
        ("/srv/w", "./a//b/./", "/srv/w/a/b", 0),  # "." and "//" and a trailing "/"
        ("/srv/w", "", "/srv/w", 0),
        ("/srv/w", "../x", "/srv/x", 0),  # the base has no symlink: exact
        ("/srv/w", "../../../../x", "/x", 0),  # ".." at "/" stays at "/"
        ("/", "..", "/", 0),
        ("/srv/w", "a/../x", "/srv/w/a/../x", kinds.PATH_LEXICAL),  # a may be a symlink
        ("/srv/w", "../a/../b", "/srv/a/../b", kinds.PATH_LEXICAL),
        ("/srv/w", "/a/../b", "/a/../b", kinds.PATH_LEXICAL),
        ("/srv/w", "/../etc", "/etc", 0),
        ("/srv/w", ".", "/srv/w", 0),
    ],
)
def test_join(base: str, name: str, want: str, flags: int) -> None:
    assert join(base, name) == (want, flags)


def test_an_installed_file_is_taken_as_the_kernel_gave_it() -> None:
    assert absolute(kinds.FROM_FILE, kinds.PATH_CUT, "/tail/x", "x", 0) == (
        "/tail/x",
        kinds.PATH_CUT,
    )


def test_a_base_is_joined_and_its_flags_kept() -> None:
    path, flags = absolute(kinds.FROM_BASE, kinds.PATH_UNREACHABLE, "/m", "f", 0)
    assert (path, flags) == ("/m/f", kinds.PATH_UNREACHABLE | kinds.PATH_JOINED)
    assert kinds.path_flag_names(flags) == ("unreachable", "joined")


def test_an_absolute_name_needs_no_base() -> None:
    assert absolute(kinds.FROM_NAME, 0, "", "/a/./b", 0) == ("/a/b", kinds.PATH_JOINED)


def test_a_cut_name_makes_a_cut_join() -> None:
    path, flags = absolute(kinds.FROM_BASE, 0, "/d", "n" * 4095, kinds.PASSED_CUT)
    assert path == "/d/" + "n" * 4095
    assert flags == kinds.PATH_JOINED | kinds.PATH_NAME_CUT


def test_nothing_resolved_is_empty_and_never_unflagged() -> None:
    assert absolute(kinds.FROM_NONE, kinds.PATH_NO_LAYOUT, "", "rel", 0) == (
        "",
        kinds.PATH_NO_LAYOUT,
    )
    assert absolute(kinds.FROM_NONE, 0, "", "rel", 0) == ("", kinds.PATH_UNREADABLE)
    assert absolute(kinds.FROM_BASE, 0, "/d", "", kinds.PASSED_UNREADABLE) == (
        "",
        kinds.PATH_NO_NAME,
    )


def test_unknown_flag_bits_are_named_not_dropped() -> None:
    assert kinds.path_flag_names(kinds.PATH_OFF | 1 << 20) == ("off", "bit20")
    assert kinds.path_flag_names(0) == ()
