"""The hot path on its own (ASGI, no server): what is counted when answering fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.copyrows import RowEncoder
from app.hotpath import HotPath
from app.metrics import HotPathMeter, Metrics
from app.settings import Settings
from trackd_links.tokens import KeyRing

RING = KeyRing.from_specs(["h1:hot-path-test-secret-0123456789"])


class Recorded:
    """A journal whose every append is already written."""

    def __init__(self) -> None:
        self.rows: list[bytes] = []

    def append(self, row: bytes, received_us: int) -> asyncio.Future[bool]:
        self.rows.append(row)
        future = asyncio.get_running_loop().create_future()
        future.set_result(True)
        return future


def hot_path() -> tuple[HotPath, Metrics, Recorded]:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never reached
        raise AssertionError("not a tracked path")

    metrics = Metrics(None)
    hot = HotPath(app, RING, metrics, HotPathMeter(metrics), RowEncoder(Settings()),
                  user_agent_max_bytes=512, capture_forwarded_for=False, fallback_url=None)  # fmt: skip
    journal = Recorded()
    hot.journal = journal
    return hot, metrics, journal


def click_scope() -> dict[str, Any]:
    token = RING.sign_click("c", "r", 0, "https://shop.example/sale")
    return {"type": "http", "method": "GET", "path": f"/c/{token}", "headers": [(b"user-agent", b"UA")],
            "client": ("198.51.100.7", 5555)}  # fmt: skip


def count(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("failure", [RuntimeError("the socket went away"), asyncio.CancelledError()])
async def test_an_event_recorded_before_its_answer_failed_is_counted_as_recorded(failure: BaseException) -> None:
    """The event is in the journal, so it will be in `events`: the recorded count must say so
    (rows = recorded is what the benchmarks and dashboards check), whether the answer then
    failed unexpectedly or the request was cancelled at shutdown."""
    hot, metrics, journal = hot_path()

    async def send(message: dict[str, Any]) -> None:
        raise failure

    with pytest.raises(type(failure)):
        await hot(click_scope(), None, send)
    hot.meter.flush()
    assert len(journal.rows) == 1
    recorded = {"kind": "click", "outcome": "recorded", "machine": "false"}
    assert count(metrics, "trackd_interactions_total", recorded) == 1
    unexpected = count(metrics, "trackd_hot_path_errors_total", {"kind": "click"})
    assert unexpected == (1 if isinstance(failure, Exception) else 0)  # a cancellation is no error


async def test_a_request_answered_is_counted_once() -> None:
    hot, metrics, journal = hot_path()
    sent: list[dict[str, Any]] = []
    recorded = {"kind": "click", "outcome": "recorded", "machine": "false"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await hot(click_scope(), None, send)
    hot.meter.flush()
    assert sent[0]["status"] == 302 and dict(sent[0]["headers"])[b"location"] == b"https://shop.example/sale"
    assert len(journal.rows) == 1 and count(metrics, "trackd_interactions_total", recorded) == 1
    assert count(metrics, "trackd_request_duration_seconds_count", {"kind": "click"}) == 1
