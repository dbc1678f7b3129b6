"""Temporary names made the same across runs, so a diff sees behaviour. Pure.

Two identical builds do not touch identical paths: gcc's assembler output is
``/tmp/ccA1b2C3.s`` in one and ``/tmp/ccZ9y8X7.s`` in the other, a shell's
here-document carries its pid. :func:`normalize_path` rewrites the parts of a
path that a run cannot choose to a fixed placeholder, by these rules (the
only ones: a name they do not match is compared as it is):

1. Under a temporary directory (a path below ``/tmp``, ``/var/tmp``,
   ``/dev/shm`` or ``/run/user/UID``, or below any directory named ``tmp``,
   ``temp`` or ``.tmp``), a name's random part becomes ``XXXXXX``, the
   extension kept:

   - ``cc`` and 6 letters or digits: gcc's temporaries, ``ccXXXXXX.s``;
   - ``tmp`` and 8 of ``[a-z0-9_]``: Python's tempfile, ``tmpXXXXXX``;
   - ``tmp.`` and 10 letters or digits: mktemp(1), ``tmp.XXXXXX``;
   - any other name ending (before its extension) in a separator (``.``,
     ``-``, ``_``) and 6 or more letters and digits with at least one of
     each: mkstemp(3) templates, ``sess-XXXXXX``.

   A directory so named makes what is below it temporary too.
2. Anywhere, a pid in ``/proc/PID`` (and ``/proc/PID/task/TID``) becomes
   ``<N>``.
3. Anywhere, a number of 3 or more digits standing alone in a name (with a
   separator ``.-_+~#,`` or the name's edge on each side, and not part of a
   dotted version like ``1.2.345``) becomes ``<N>``: numbered build and
   lock files, pids in names (``conftest.12345``, ``out-0042.o``).

What can go wrong: a real change that only differs in such a part (a build
that now writes ``/tmp/ccNEW123.s`` instead of another random name) is not
drift, by design; ``--ignore`` is for everything else. The rules only ever
shorten the set of distinct names, never make one that two different
programs could not already have shown.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["NUMBER", "RANDOM", "normalize_path"]

#: What a random part becomes (mkstemp's own template letters).
RANDOM: Final = "XXXXXX"
#: What a run-chosen number becomes.
NUMBER: Final = "<N>"

_TEMP_ROOTS: Final = ("/tmp/", "/var/tmp/", "/dev/shm/")
_RUN_USER: Final = re.compile(r"/run/user/[0-9]+/")
_TEMP_DIRS: Final = frozenset({"tmp", "temp", ".tmp"})
_EXT: Final = r"(?P<ext>(?:\.[A-Za-z0-9]{1,8})*)"
_SHAPES: Final = (
    re.compile(r"(?P<keep>cc)[A-Za-z0-9]{6}" + _EXT),
    re.compile(r"(?P<keep>.*tmp)[a-z0-9_]{8}" + _EXT),
    re.compile(r"(?P<keep>tmp\.)[A-Za-z0-9]{10}"),
    re.compile(
        r"(?P<keep>.*?[._-])(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{6,}" + _EXT
    ),
)
_PROC: Final = re.compile(r"^/proc/[0-9]+(?=/|$)(?:(/task/)[0-9]+(?=/|$))?")
_NUMBER: Final = re.compile(r"(?<![^.\-_+~#,])(?<![0-9]\.)[0-9]{3,}(?![^.\-_+~#,])(?!\.[0-9])")


def _random_name(name: str) -> str | None:
    """``name`` with its random part replaced, or None if it has none."""
    for shape in _SHAPES:
        match = shape.fullmatch(name)
        if match is not None:
            ext = match.groupdict().get("ext") or ""
            return match.group("keep") + RANDOM + ext
    return None


def _temporary_names(path: str) -> str:
    """Rule 1: random parts of names below a temporary directory."""
    parts = path.split("/")
    temp_from = len(parts)  # the index of the first name below a temporary dir
    for root in _TEMP_ROOTS:
        if path.startswith(root):
            temp_from = root.count("/")
            break
    else:
        run_user = _RUN_USER.match(path)
        if run_user is not None:
            temp_from = run_user.group().count("/")
    for index, name in enumerate(parts[:temp_from]):
        if name in _TEMP_DIRS:
            temp_from = index + 1
            break
    for index in range(temp_from, len(parts)):
        replaced = _random_name(parts[index])
        if replaced is not None:
            parts[index] = replaced
    return "/".join(parts)


def normalize_path(path: str) -> str:
    """``path`` with the parts a run cannot choose made fixed (the rules
    above). Pure; the same path always gives the same answer."""
    path = _temporary_names(path)
    path = _PROC.sub(lambda m: f"/proc/{NUMBER}" + (f"/task/{NUMBER}" if m.group(1) else ""), path)
    return "/".join(_NUMBER.sub(NUMBER, name) for name in path.split("/"))
