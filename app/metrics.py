"""Prometheus metrics. One registry per app (no process-global state), children bound once.

No label ever carries a token, URL, campaign or recipient: series counts stay fixed however
many links are clicked. With several worker processes (`trackd serve --workers N`) the values
live in PROMETHEUS_MULTIPROC_DIR and every scrape, whichever worker answers it, adds them all up.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from app import __version__

KINDS = ("open", "click")
OUTCOMES = ("recorded", "bad_token", "dropped")
# Hot-path latency: the bulk of answers take tens of microseconds; anything past 100 ms is a fault.
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)
REQUEST_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        # `*_created` series double the exposition size and no dashboard of ours uses them.
        disable_created_metrics()
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.interactions = Counter(
            "trackd_interactions",
            "Tracked requests answered, by kind, outcome (recorded, bad_token, dropped) and machine or person.",
            ["kind", "outcome", "machine"],
            registry=r,
        )
        self.request_duration = Histogram(
            "trackd_request_duration_seconds",
            "Time to answer a click redirect or a pixel, on the hot path.",
            ["kind"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.hot_path_errors = Counter(
            "trackd_hot_path_errors", "Unexpected errors while answering /c/ or /o/.", ["kind"], registry=r
        )
        self.events_written = Counter(
            "trackd_events_written", "Event rows committed to PostgreSQL (new rows only).", registry=r
        )
        self.events_duplicate = Counter(
            "trackd_events_duplicate",
            "Event rows skipped at commit because they were already in PostgreSQL (replays, retries).",
            registry=r,
        )
        self.events_dropped = Counter(
            "trackd_events_dropped", "Events answered but not kept, by reason.", ["reason"], registry=r
        )
        self.events_replayed = Counter(
            "trackd_events_replayed",
            "Events committed from journals left by a previous or dead process.",
            registry=r,
        )
        self.events_dead_lettered = Counter(
            "trackd_events_dead_lettered",
            "Rows PostgreSQL refused, kept in events_dead_letter instead.",
            registry=r,
        )
        self.write_errors = Counter(
            "trackd_write_errors", "Batches that failed to commit, by error class.", ["error"], registry=r
        )
        self.write_retries = Counter("trackd_write_retries", "Batch write attempts retried.", registry=r)
        self.journal_damaged = Counter(
            "trackd_journal_damaged",
            "Damage skipped while reading the journal (corrupt_record, torn_tail).",
            ["kind"],
            registry=r,
        )
        self.batch_rows = Histogram(
            "trackd_batch_rows",
            "Rows per committed batch.",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000),
            registry=r,
        )
        self.flush_seconds = Histogram(
            "trackd_flush_seconds",
            "Time to commit one batch.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.ingest_lag = Histogram(
            "trackd_ingest_lag_seconds",
            "From receipt of a request to the commit of its event row.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.backlog_rows = Gauge(
            "trackd_backlog_rows", "Events received but not yet committed.", registry=r, multiprocess_mode="livesum"
        )
        self.backlog_bytes = Gauge(
            "trackd_backlog_bytes",
            "Journal bytes not yet committed (own and adopted journals).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.journal_bytes = Gauge(
            "trackd_journal_bytes",
            "Bytes of this process's journal on disk (capped by TRACKD_JOURNAL_MAX_BYTES).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.backlog_oldest = Gauge(
            "trackd_backlog_oldest_age_seconds",
            "Age of the oldest event not yet committed.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.writer_up = Gauge(
            "trackd_writer_up",
            "1 while the last attempt to reach PostgreSQL succeeded.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.ready = Gauge(
            "trackd_ready", "1 while this instance reports ready (/readyz).", registry=r, multiprocess_mode="livemin"
        )
        # The stored events (app/lifecycle.py), from the catalog every TRACKD_LIFECYCLE_INTERVAL_S:
        # every process reads the same database, so the processes agree (max).
        self.events_partitions = Gauge(
            "trackd_events_partitions", "Daily partitions of the events table.", registry=r, multiprocess_mode="livemax"
        )
        self.events_bytes = Gauge(
            "trackd_events_bytes",
            "Bytes of the events table on disk: its partitions, with their indexes and TOAST.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.events_oldest_partition = Gauge(
            "trackd_events_oldest_partition_timestamp_seconds",
            "Start (unix time, UTC midnight) of the oldest partition of events: how far back raw events go.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.events_newest_partition = Gauge(
            "trackd_events_newest_partition_timestamp_seconds",
            "Start (unix time) of the newest partition of events: how far ahead partitions are made.",
            registry=r,
            multiprocess_mode="livemax",
        )
        # Deferred verdicts (app/verdicts/deferred.py): what this process's calls judged, and how far
        # behind judging is (from verdict_progress: every process reads the same row, so they agree).
        self.verdicts_examined = Counter(
            "trackd_verdicts_examined", "Events judged by the deferred rules (this process's calls).", registry=r
        )
        self.verdicts_revised = Counter(
            "trackd_verdicts_revised",
            "Events whose verdict the deferred rules changed (person to machine, or reasons added).",
            registry=r,
        )
        self.verdict_errors = Counter(
            "trackd_verdict_errors", "Calls of the deferred verdicts that failed (the database's error).", registry=r
        )
        self.verdicts_lag = Gauge(
            "trackd_verdicts_lag_seconds",
            "Seconds since the deferred verdicts last caught up: every event committed before then is judged.",
            registry=r,
            multiprocess_mode="livemin",
        )
        Gauge("trackd_build_info", "Build information.", ["version"], registry=r, multiprocess_mode="max").labels(
            __version__
        ).set(1)

        # Hostile or broken clients (docs/reliability.md): counted as client events, never as
        # hot-path errors, so an alert on trackd_hot_path_errors_total stays a bug signal.
        self.client_events = Counter(
            "trackd_client_events",
            "Connections and requests ended by the client or refused for its behaviour, by reason "
            "(disconnect, bad_request, target_too_long, headers_too_large, header_timeout, "
            "pipeline_paused, connection_limit, upgrade_refused).",
            ["reason"],
            registry=r,
        )
        self.open_connections = Gauge(
            "trackd_open_connections",
            "HTTP connections open in this process.",
            registry=r,
            multiprocess_mode="livesum",
        )
        # Bound once: the hot path increments a ready child, no label lookup per request.
        self.outcome = {
            (kind, outcome, machine): self.interactions.labels(kind, outcome, "true" if machine else "false")
            for kind in KINDS
            for outcome in OUTCOMES
            for machine in (False, True)
        }
        self.duration = {kind: self.request_duration.labels(kind) for kind in KINDS}
        self.hot_errors = {kind: self.hot_path_errors.labels(kind) for kind in KINDS}
        self.journal_damaged_corrupt = self.journal_damaged.labels("corrupt_record")
        self.journal_damaged_torn = self.journal_damaged.labels("torn_tail")
        self.dropped_full = self.events_dropped.labels("journal_full")
        self.dropped_error = self.events_dropped.labels("journal_write_error")
        self.dropped_rate_token = self.events_dropped.labels("rate_token")
        self.dropped_rate_client = self.events_dropped.labels("rate_client")

    def exposition(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.multiprocess_dir))
        return generate_latest(registry)

    def process_exiting(self) -> None:
        """Drop this process's live gauges from the shared directory (counters stay counted)."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), str(self.multiprocess_dir))


def observe_weighted(histogram: Histogram, bounds: tuple[float, ...], pairs: Iterable[tuple[float, int]]) -> None:
    """Histogram.observe() for many (value, how many times) pairs at once: one increment per
    bucket, not per value (each observe() takes a lock). `bounds` are the histogram's finite
    buckets."""
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for value, times in pairs:
        counts[bisect_left(bounds, value)] += times
        total += value * times
    _add_counts(histogram, counts, total)


def _add_counts(histogram: Histogram, counts: list[int], total: float) -> None:
    # Histogram.observe() has no batch form; its per-bucket values are what it increments itself
    # (private, but declared and typed in prometheus-client; it is pinned, and tests check the
    # resulting counts).
    for index, count in enumerate(counts):
        if count:
            histogram._buckets[index].inc(count)
    if total:
        histogram._sum.inc(total)


class HotPathMeter:
    """The hot path's counts, kept in plain integers and added to the Prometheus metrics by
    `flush()` (on every scrape and every second). prometheus_client takes a lock for every
    increment and observation, about a microsecond each; the hot path would pay two per request.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._outcomes = dict.fromkeys(metrics.outcome, 0)
        # One slot per finite bucket plus +Inf, as prometheus_client lays them out.
        self._buckets = {kind: [0] * (len(REQUEST_BUCKETS) + 1) for kind in KINDS}
        self._sums = dict.fromkeys(KINDS, 0.0)

    def request(self, kind: str, outcome: str, machine: bool, seconds: float) -> None:
        """One answered request: its outcome and how long the hot path took (one call, not two:
        a method call is a tenth of a microsecond on this path)."""
        self._outcomes[kind, outcome, machine] += 1
        self._sums[kind] += seconds
        self._buckets[kind][bisect_left(REQUEST_BUCKETS, seconds)] += 1

    def flush(self) -> None:
        for key, count in self._outcomes.items():
            if count:
                self._outcomes[key] = 0
                self.metrics.outcome[key].inc(count)
        for kind, buckets in self._buckets.items():
            if any(buckets):
                _add_counts(self.metrics.duration[kind], buckets, self._sums[kind])
                self._buckets[kind] = [0] * len(buckets)
                self._sums[kind] = 0.0
