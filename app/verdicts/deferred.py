"""The deferred verdicts' task: every TRACKD_VERDICT_INTERVAL_S each pod asks PostgreSQL to judge
the events committed since the last judgement (trackd_judge_verdicts, migration 011: bursts,
address bursts, the rest of a scan, honeypot scans, probable networks), so that the rollups, and
the stats' human numbers, follow within a second or two of the last event of a pattern.

Every pod runs it; one call at a time does the work (the function takes a transaction-level
advisory lock and a second caller returns at once), so a pod that dies mid-call costs nothing
but that call, and the next caller carries on from the same watermark. Calls repeat at once while
one returns a full batch (catching up after an outage or a burst of traffic). Operators' side:
docs/runbook.md and the metrics trackd_verdicts_*.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from app.db import Connection, Pool
from app.metrics import Metrics
from app.settings import Settings

log = logging.getLogger("trackd.verdicts")

_JUDGE = """
SELECT judged, examined, revised, more, extract(epoch FROM now() - caught_up_at)::float8 AS lag_s
FROM trackd_judge_verdicts($1, $2, $3, $4, $5, $6)
"""
# Calls in one round while catching up, before the round ends and the metrics are brought up to
# date (the next round starts at once: the interval is slept only after a round that caught up).
_MAX_CALLS_PER_ROUND = 50


@dataclass(frozen=True)
class Judgement:
    judged: bool  # false: another pod's call was judging; this one did nothing
    examined: int
    revised: int
    more: bool  # a full batch: call again at once
    lag_s: float | None  # seconds since a call last found every committed event judged


async def judge_once(pool: Pool, settings: Settings) -> Judgement:
    async with pool.acquire() as conn:
        return await judge_on(conn, settings)


async def judge_on(conn: Connection, settings: Settings) -> Judgement:
    """One call of the judge on `conn`, with the settings' windows (also `make eval-truth`)."""
    row = await conn.fetchrow(
        _JUDGE,
        settings.verdict_batch_rows,
        settings.burst_seconds,
        settings.address_window_s,
        settings.address_burst_count,
        settings.scan_window_s,
        settings.probable_window_s,
    )
    assert row is not None
    return Judgement(row["judged"], row["examined"], row["revised"], row["more"], row["lag_s"])


class DeferredJudge:
    """Never raises: a failed call is logged once per kind of failure (not a traceback per tick),
    counted in trackd_verdict_errors_total, and tried again next interval."""

    def __init__(self, settings: Settings, pool: Pool, metrics: Metrics) -> None:
        self.settings = settings
        self.pool = pool
        self.metrics = metrics
        # The lag as PostgreSQL last said it, and when (monotonic): the gauge grows from there
        # while calls fail, without comparing this pod's clock with the database's.
        self._lag_s: float | None = None
        self._lag_seen = 0.0

    async def run(self) -> None:
        said = ""
        while True:
            more = False
            try:
                more = await self.round()
                if said:
                    log.info("deferred verdicts are judged again")
                    said = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                kind = type(exc).__name__
                self.metrics.verdict_errors.inc()
                if kind != said:
                    log.warning("judging deferred verdicts failed (%s: %s); tried again every %.1fs",
                                kind, exc, self.settings.verdict_interval_s)  # fmt: skip
                    said = kind
            self._show_lag()
            if not more:
                await asyncio.sleep(self.settings.verdict_interval_s)

    async def round(self) -> bool:
        """Judge until caught up (or _MAX_CALLS_PER_ROUND calls); whether more is waiting."""
        for _ in range(_MAX_CALLS_PER_ROUND):
            result = await judge_once(self.pool, self.settings)
            if result.judged:
                self.metrics.verdicts_examined.inc(result.examined)
                self.metrics.verdicts_revised.inc(result.revised)
            if result.lag_s is not None:
                self._lag_s = max(0.0, result.lag_s)
                self._lag_seen = time.monotonic()
            if not result.more:
                return False
        return True

    def _show_lag(self) -> None:
        if self._lag_s is not None:
            self.metrics.verdicts_lag.set(self._lag_s + time.monotonic() - self._lag_seen)
