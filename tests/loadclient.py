"""A small load generator for the fault tests: paced GETs over keep-alive connections to a server
on loopback, recording every request's outcome, so that the test can compare what clients were
served with what reached PostgreSQL. Bounded: it sends each prepared path at most once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from tests.support import SIGNING_KEYS
from trackd_links.tokens import KeyRing

RING = KeyRing.from_specs(SIGNING_KEYS.split(","))


@dataclass
class Outcome:
    index: int
    sent_at: float  # monotonic
    latency: float | None = None  # seconds, None when no response came back
    status: int | None = None
    error: str | None = None


def signed_paths(campaign: str, count: int, *, click_share: float = 0.5) -> list[str]:
    """One path per request, each for its own recipient `r{i}`, so rows map back to requests."""
    paths = []
    clicks_every = max(1, round(1 / click_share)) if click_share > 0 else 0
    for i in range(count):
        recipient = f"r{i}"
        if clicks_every and i % clicks_every == 0:
            paths.append("/c/" + RING.sign_click(campaign, recipient, 0, f"https://example.com/p/{i}?x=1"))
        else:
            paths.append(f"/o/{RING.sign_open(campaign, recipient)}.gif")
    return paths


@dataclass
class Load:
    host: str
    port: int
    paths: list[str]
    rate: float  # requests per second over all connections
    connections: int = 4
    outcomes: list[Outcome] = field(default_factory=list)
    _next: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _started: float = 0.0

    async def run(self) -> list[Outcome]:
        self._started = time.monotonic()
        await asyncio.gather(*(self._connection() for _ in range(self.connections)))
        return self.outcomes

    def stop(self) -> None:
        self._stop.set()

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    async def _connection(self) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while not self._stop.is_set() and self._next < len(self.paths):
            index = self._next
            self._next += 1
            due = self._started + index / self.rate
            if (wait := due - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)
                if self._stop.is_set():
                    return
            outcome = Outcome(index, time.monotonic())
            self.outcomes.append(outcome)
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 2)
                assert reader is not None
                outcome.sent_at = time.monotonic()
                request = f"GET {self.paths[index]} HTTP/1.1\r\nHost: test\r\nUser-Agent: loadclient\r\n\r\n"
                writer.write(request.encode())
                outcome.status = await asyncio.wait_for(self._response(reader), 10)
                outcome.latency = time.monotonic() - outcome.sent_at
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                outcome.status = None
                outcome.error = type(exc).__name__
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.05)  # the server may be restarting: do not spin

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> int:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        if length:
            await reader.readexactly(length)
        return status


def served(outcomes: list[Outcome]) -> set[str]:
    """Recipients whose request got a tracked answer (302 or the pixel)."""
    return {f"r{o.index}" for o in outcomes if o.status in (200, 302)}


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
