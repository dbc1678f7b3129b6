"""A file record's absolute path, from what the kernel resolved. Pure.

The kernel (bpf/file.bpf.c) resolves one of three things per path: the
file itself (an open that installed an fd, an fd-only op), the base
directory the name is relative to (the cwd or the dirfd's file: for names
that may not exist, or no longer do), or nothing for a name that is
absolute already. Here the base and the name are joined.

The base comes from a walk of the kernel's dentries, so it has no symlink
and no ``.`` or ``..`` in it: a ``..`` right after it (or after another
``..`` that removed a base component) is exact. A ``..`` after a name
component is not: that component may be a symlink, and ``a/..`` is then
not the base. Such a ``..`` is kept as it is and the path flagged
``lexical`` (:data:`~agent.capture.kinds.PATH_LEXICAL`), never guessed
away. ``.`` and empty components (``//``) are dropped: the kernel ignores
them too. A trailing slash is dropped.

What can go wrong: nothing raises. A base that is cut or unreachable keeps
its flags, and the join carries them.
"""

from __future__ import annotations

from agent.capture.kinds import (
    FROM_BASE,
    FROM_FILE,
    FROM_NAME,
    PASSED_CUT,
    PASSED_UNREADABLE,
    PATH_JOINED,
    PATH_LEXICAL,
    PATH_NAME_CUT,
    PATH_NO_NAME,
    PATH_UNREADABLE,
)

__all__ = ["absolute", "join"]


def join(base: str, name: str) -> tuple[str, int]:
    """``name`` resolved against ``base`` (absolute, symlink-free): the
    path and :data:`PATH_LEXICAL` if a ``..`` had to be kept, else 0.
    An absolute ``name`` ignores the base (its base is ``/``)."""
    parts = [] if name.startswith("/") else [p for p in base.split("/") if p]
    exact = len(parts)  # parts[:exact] are symlink-free: ".." pops them exactly
    flags = 0
    for part in name.split("/"):
        if not part or part == ".":
            continue
        if part == "..":
            if len(parts) == exact:
                if parts:
                    parts.pop()
                exact = len(parts)
                continue
            flags = PATH_LEXICAL
        parts.append(part)
    return "/" + "/".join(parts), flags


def absolute(source: int, flags: int, resolved: str, name: str, name_flags: int) -> tuple[str, int]:
    """A record's absolute path and its ``PATH_*`` flags, from what the
    kernel sent: ``source`` (``FROM_*``), its walk ``flags``, the
    ``resolved`` bytes (the file's path or the base), and the ``name`` as
    passed with its ``PASSED_*`` flags. Empty when nothing was resolved,
    with flags that say why (never 0 then)."""
    if source == FROM_FILE:
        return resolved, flags
    if source not in (FROM_BASE, FROM_NAME):
        return "", flags or PATH_UNREADABLE
    if name_flags & PASSED_UNREADABLE:
        return "", flags | PATH_NO_NAME
    path, lexical = join(resolved if source == FROM_BASE else "/", name)
    flags |= PATH_JOINED | lexical
    if name_flags & PASSED_CUT:
        flags |= PATH_NAME_CUT
    return path, flags
