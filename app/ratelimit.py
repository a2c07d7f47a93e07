"""Per-key token buckets for the hot path (per token, per client address), O(1) per event and
bounded in memory: at most `max_entries` keys; when the cap is hit, the oldest key is evicted
(dict insertion order; a key is re-inserted each time it is charged). An evicted key comes
back with a full bucket, which is no worse than a key never seen before."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from time import monotonic


class Buckets:
    __slots__ = ("_state", "burst", "clock", "max_entries", "rate")

    def __init__(self, burst: int, per_s: float, *, max_entries: int = 100_000,
                 clock: Callable[[], float] = monotonic) -> None:  # fmt: skip
        self.burst = float(burst)
        self.rate = float(per_s)
        self.max_entries = max(1, max_entries)
        self.clock = clock
        self._state: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._state)

    def take(self, key: Hashable, now: float | None = None) -> bool:
        """Charge one event to `key`: True if within its burst and rate, False to drop it."""
        if now is None:
            now = self.clock()
        state = self._state
        old = state.pop(key, None)
        if old is None:
            tokens = self.burst
            if len(state) >= self.max_entries:
                del state[next(iter(state))]  # the least recently charged key
        else:
            tokens = min(self.burst, old[0] + (now - old[1]) * self.rate)
        if tokens < 1.0:
            state[key] = (tokens, now)
            return False
        state[key] = (tokens - 1.0, now)
        return True
