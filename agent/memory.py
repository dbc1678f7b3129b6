"""Give memory the daemon has freed back to the system.

glibc keeps freed heap memory for reuse, so after a transient peak (the
copies of a snapshot of a busy host, a burst that filled a bounded queue)
the daemon's RSS stays where the peak put it although nothing holds that
memory any more: an operator watching RSS cannot tell that from a leak.
``malloc_trim(0)`` returns the whole free pages of every arena. It costs a
few milliseconds, so the daemon calls it once a minute and after each
snapshot, never on the capture path. Elsewhere than glibc: nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Final

__all__ = ["TRIM_EVERY_S", "release_free_memory"]

TRIM_EVERY_S: Final = 60.0
"""How often the daemon returns free heap pages to the system."""


def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM: Final = _malloc_trim()


def release_free_memory() -> bool:
    """Return free heap pages to the system; False where that is not possible."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
