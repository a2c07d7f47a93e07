"""Per-key token buckets for the hot path (per token, per client address), O(1) per event and
bounded in memory: at most `max_entries` keys. When the cap is hit the key that came first is
evicted (dict insertion order): it comes back with a full bucket, which is no worse than a key
never seen before. To get a burst back that way a client must bring `max_entries` other keys,
each a validly signed token or an address of its own, so the cap bounds memory without opening
a way around the limit. (Keeping the map in least-recently-charged order instead cost a pop and
an insert per event: 0.3 µs of the 0.7 µs a charge took, measured with timeit.)"""

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
        self._state: dict[Hashable, list[float]] = {}  # key -> [tokens, at], updated in place

    def __len__(self) -> int:
        return len(self._state)

    def take(self, key: Hashable, now: float | None = None) -> bool:
        """Charge one event to `key`: True if within its burst and rate, False to drop it."""
        if now is None:
            now = self.clock()
        bucket = self._state.get(key)
        if bucket is None:
            bucket = self._add(key, now)
        elapsed = now - bucket[1]
        if elapsed > 0.0:
            tokens = bucket[0] + elapsed * self.rate
            if tokens > self.burst:
                tokens = self.burst
            bucket[1] = now
        else:  # the clock stepped back (a wall clock: NTP): no refill, and no debt either
            tokens = bucket[0]
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _add(self, key: Hashable, now: float) -> list[float]:
        state = self._state
        if len(state) >= self.max_entries:
            del state[next(iter(state))]  # the key that came first
        bucket = state[key] = [self.burst, now]
        return bucket
