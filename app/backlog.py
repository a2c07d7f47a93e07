"""Events received and not yet committed: what the hot path appends to and the writer drains.

The writer peeks at the head, writes it, and only then removes it (`commit`), so a batch that
failed stays first in line for the retry.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

from app.events import RawEvent


class MemoryBacklog:
    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self._events: deque[RawEvent] = deque()

    def append(self, event: RawEvent) -> bool:
        """Keep `event` for the writer. False when full: the caller counts it as dropped."""
        if len(self._events) >= self.max_events:
            return False
        self._events.append(event)
        return True

    def peek(self, max_rows: int) -> list[RawEvent]:
        return list(islice(self._events, max_rows))

    def commit(self, count: int) -> None:
        for _ in range(count):
            self._events.popleft()

    @property
    def rows(self) -> int:
        return len(self._events)

    @property
    def full(self) -> bool:
        return len(self._events) >= self.max_events

    def oldest_received_at(self) -> float | None:
        return self._events[0].received_at if self._events else None
