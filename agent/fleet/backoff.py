"""Retry delays while NATS is away: exponential, capped, full jitter.

Delay ``n`` (from 0) is uniform in ``[0, min(cap, base * 2**n)]`` ("full
jitter"), so a fleet that lost its NATS at the same moment does not come
back at the same moment. Sans-I/O: the caller sleeps.
"""

from __future__ import annotations

import random
from typing import Final

__all__ = ["BASE_S", "CAP_S", "Backoff"]

BASE_S: Final = 0.1
CAP_S: Final = 10.0


class Backoff:
    """The next delay to wait before trying again; :meth:`reset` after a success."""

    def __init__(
        self, base_s: float = BASE_S, cap_s: float = CAP_S, rng: random.Random | None = None
    ) -> None:
        if not 0 < base_s <= cap_s:
            raise ValueError(f"expected 0 < base_s <= cap_s, got {base_s}, {cap_s}")
        self._base = base_s
        self._cap = cap_s
        self._rng = rng or random.Random()
        self._tries = 0

    @property
    def tries(self) -> int:
        """Delays handed out since the last :meth:`reset`."""
        return self._tries

    def ceiling(self) -> float:
        """The largest delay :meth:`next` can give now."""
        return float(min(self._cap, self._base * 2 ** min(self._tries, 64)))

    def next(self) -> float:
        delay = self._rng.uniform(0.0, self.ceiling())
        self._tries += 1
        return delay

    def reset(self) -> None:
        self._tries = 0
