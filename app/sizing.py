"""From a benchmark (`docs/bench/latest.json`) and a peak rate to replicas, CPU and database load.

Pure functions: `load_bench` reads the harness output, `plan` does the arithmetic, `report` and
`overlay_files` turn a plan into text. Nothing here talks to a cluster; docs/scaling.md explains
the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_BENCH = Path("docs/bench/latest.json")
DEFAULT_OVERLAY = Path("k8s/overlays/prod")
DEFAULT_HEADROOM = 0.6
# Zones the pods spread over (topologySpreadConstraints, maxSkew 1). The minimum is sized so that
# losing any one of them leaves enough pods for the peak before the autoscaler has reacted.
DEFAULT_ZONES = 3
# WAL written per committed event: the row, its index entries and what the trigger adds to the
# rollups (migration 007). Measured by tests/test_sizing.py::test_bytes_per_event_is_what_postgresql_stores
# on 2026-12-04: 589 bytes per click (120-byte user agent) written by the writer, recipients mostly
# seen before. (540 before the rollups.) A campaign of first-time engagers writes more: each new
# unique is a recipient_touch row.
DEFAULT_WAL_BYTES_PER_ROW = 590
# Disk per committed event: the row in its daily partition plus its entries in the indexes (the
# primary key, the feed's (xid, id) and the hash on recipient_id; migration 007), links v2 columns
# included. Measured by the same test on 2026-12-04: the partitions' pg_total_relation_size over
# 20,000 click rows as the hot path makes them (113-byte user agent, 40-byte URL) in the embedded
# PostgreSQL = 438.7 bytes (344.9 before migration 007). Clicks, the larger kind, are the planning
# figure; the test fails if it drifts more than 15 %. Longer URLs and user agents cost their length
# (docs/scaling.md). The rollups are per recipient, not per event (docs/analytics.md).
DEFAULT_BYTES_PER_EVENT = 440
# What one primary was measured to take comes from the bench (writer.events_per_s): the writer
# alone, COPY through one connection with every rollup kept by the trigger (docs/benchmarks.md,
# "Issue #13: the writer with every rollup": 43,403 events/s on 2026-12-04; 195,357 before the
# rollups). Above it the plan warns, naming the bench's date: docs/scaling.md, "Past one
# primary", says what to do.
_WRITER_SOURCE = 'the writer alone through one connection, `{command}` of {date}: docs/benchmarks.md "Results"'
# ESTIMATE, not measured: server CPU per POST /v1/tracking-urls for a 10-link email. The bench
# measures only /c/ and /o/; this assumes ~400 us for a FastAPI request with auth, a JSON body
# and pydantic validation on this machine class, plus ~8 us per token signed (KeyRing.verify of a
# v2 token: 7.61 us, docs/benchmarks.md "Issue #12") for the open token and 10 links. Pass
# --api-cpu-us with a measured figure for your traffic.
DEFAULT_API_CPU_US_PER_REQUEST = 500.0
# TRACKD_DB_POOL_MAX's default (app/settings.py; a test keeps the two equal).
DEFAULT_DB_POOL_MAX = 4
# PostgreSQL's defaults: max_connections 100, of which superuser_reserved_connections 3.
DEFAULT_PG_MAX_CONNECTIONS = 100
_PG_RESERVED_CONNECTIONS = 3
_SECONDS_PER_DAY = 86_400
# One uvicorn process runs one event loop: it cannot use much more than one core, so a CPU limit
# below one core only throttles bursts, and one far above it is never used.
_CPU_LIMIT_FLOOR_M = 1000
_CPU_REQUEST_FLOOR_M = 100
# Generated files in the prod overlay; kustomization.yaml there lists them.
SCALING_PATCH = "sizing-scaledobject.yaml"
RESOURCES_PATCH = "sizing-resources.yaml"
# The object RESOURCES_PATCH patches: the prod overlay's workload (a StatefulSet: the journal on a
# claim per pod; k8s/components/statefulset). The ScaledObject's scaleTargetRef names the same.
WORKLOAD_KIND = "StatefulSet"
WORKLOAD_NAME = "trackd"

_KIND_FIELDS = ("rps", "bare_rps", "ratio", "p50_ms", "p99_ms", "p999_ms", "cpu_s_per_million", "rss_mb")


class SizingError(ValueError):
    """Bad input: a missing or malformed benchmark file, or an impossible argument."""


@dataclass(frozen=True)
class KindBench:
    """One route's figures from the harness (`click` or `pixel`)."""

    rps: float
    bare_rps: float
    ratio: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    cpu_s_per_million: float
    rss_mb: float
    # Optional extension: the highest paced rate whose p99 stayed within p99_target_ms. When the
    # harness does not give it, `rps` (saturation) stands in, with a warning if its p99 missed.
    rps_at_p99_target: float | None = None
    # Optional: the trackd process's own CPU per million requests. The harness runs PostgreSQL on
    # the same machine and `cpu_s_per_million` counts both; a pod's CPU is only trackd's.
    server_cpu_s_per_million: float | None = None

    @property
    def pod_cpu_s_per_million(self) -> float:
        return self.cpu_s_per_million if self.server_cpu_s_per_million is None else self.server_cpu_s_per_million


@dataclass(frozen=True)
class Bench:
    date: str
    command: str
    machine: str
    connections: int
    click: KindBench
    pixel: KindBench
    writer_events_per_s: float
    p99_target_ms: float
    provisional: bool = False


@dataclass(frozen=True)
class Plan:
    peak_rps: float
    headroom: float
    capacity_rps: float  # what one pod answers within the latency target
    target_rps_per_pod: int  # the autoscaler's per-pod threshold
    min_replicas: int
    max_replicas: int
    cpu_request_m: int
    cpu_limit_m: int
    db_rows_per_s: float
    wal_mb_per_s: float
    wal_bytes_per_row: int
    bench_date: str
    provisional: bool
    warnings: tuple[str, ...] = field(default_factory=tuple)
    zones: int = DEFAULT_ZONES
    min_replicas_floor: int | None = None  # --min-replicas as given, for the overlay's header
    api_rps: float = 0.0
    api_cpu_us_per_request: float = DEFAULT_API_CPU_US_PER_REQUEST
    needed_rps: float = 0.0  # peak plus the API's CPU in tracked requests' worth
    events_per_day: float = 0.0
    bytes_per_event: int = DEFAULT_BYTES_PER_EVENT
    bytes_per_day: float = 0.0
    writer_events_per_s: float = 0.0
    db_pool_max: int = DEFAULT_DB_POOL_MAX
    db_connections_min: int = 0
    db_connections_max: int = 0
    pgbouncer_pool: int | None = None
    pg_max_connections: int = DEFAULT_PG_MAX_CONNECTIONS


def _number(obj: dict[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SizingError(f"{where}.{key}: expected a number, got {value!r}")
    return float(value)


def _kind(data: dict[str, Any], name: str) -> KindBench:
    section = data.get(name)
    if not isinstance(section, dict):
        raise SizingError(f"{name}: expected an object with {', '.join(_KIND_FIELDS)}")
    values = {key: _number(section, key, name) for key in _KIND_FIELDS}
    if values["rps"] <= 0:
        raise SizingError(f"{name}.rps: must be positive, got {values['rps']}")
    optional = {
        key: _number(section, key, name)
        for key in ("rps_at_p99_target", "server_cpu_s_per_million")
        if section.get(key) is not None
    }
    return KindBench(**values, **optional)


def parse_bench(data: object) -> Bench:
    if not isinstance(data, dict):
        raise SizingError("expected a JSON object at the top level")
    writer = data.get("writer")
    if not isinstance(writer, dict):
        raise SizingError("writer: expected an object with events_per_s")
    return Bench(
        date=str(data.get("date", "")),
        command=str(data.get("command", "")),
        machine=str(data.get("machine", "")),
        connections=int(_number(data, "connections", "bench")),
        click=_kind(data, "click"),
        pixel=_kind(data, "pixel"),
        writer_events_per_s=_number(writer, "events_per_s", "writer"),
        p99_target_ms=_number(data, "p99_target_ms", "bench"),
        provisional=bool(data.get("provisional", False)),
    )


def load_bench(path: Path) -> Bench:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SizingError(f"{path}: no benchmark results; run `make bench` to make them") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SizingError(f"{path}: not valid JSON ({exc})") from None
    try:
        return parse_bench(data)
    except SizingError as exc:
        raise SizingError(f"{path}: {exc}") from None


def _ceil_to(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def _capacity(bench: Bench, kind: KindBench, name: str) -> tuple[float, list[str]]:
    if kind.rps_at_p99_target is not None:
        return min(kind.rps_at_p99_target, kind.rps), []
    warnings = []
    if kind.p99_ms > bench.p99_target_ms:
        warnings.append(
            f"{name}: p99 {kind.p99_ms:g} ms at {kind.rps:g} rps misses the {bench.p99_target_ms:g} ms target "
            "and the bench gives no rps_at_p99_target; sizing from saturation, so only the headroom keeps p99 down"
        )
    return kind.rps, warnings


def zone_spread(survivors: int, zones: int) -> int:
    """The fewest pods, spread over `zones` with a skew of at most one, such that losing the zone
    with the most of them still leaves `survivors`: ceil(survivors x zones / (zones - 1)), at
    least one per zone. The loop corrects the closed form where ceil(m / zones) rounds up."""
    pods = max(zones, math.ceil(survivors * zones / (zones - 1)))
    while pods - math.ceil(pods / zones) < survivors:
        pods += 1
    return pods


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SizingError(message)


def plan(
    bench: Bench,
    peak_rps: float,
    headroom: float = DEFAULT_HEADROOM,
    min_replicas: int | None = None,
    wal_bytes_per_row: int = DEFAULT_WAL_BYTES_PER_ROW,
    *,
    zones: int = DEFAULT_ZONES,
    api_rps: float = 0.0,
    api_cpu_us_per_request: float = DEFAULT_API_CPU_US_PER_REQUEST,
    bytes_per_event: int = DEFAULT_BYTES_PER_EVENT,
    db_pool_max: int = DEFAULT_DB_POOL_MAX,
    pgbouncer_pool: int | None = None,
    pg_max_connections: int = DEFAULT_PG_MAX_CONNECTIONS,
) -> Plan:
    """Size for `peak_rps` interactions/s (plus `api_rps` signing/rewrite requests/s) with pods
    run at `headroom` x their measured capacity, surviving the loss of one of `zones` zones."""
    _check(
        math.isfinite(peak_rps) and peak_rps > 0, f"--peak must be a positive number of interactions/s, got {peak_rps}"
    )
    _check(math.isfinite(headroom) and 0 < headroom <= 1, f"--headroom must be in (0, 1], got {headroom}")
    _check(
        min_replicas is None or min_replicas >= 2,
        f"--min-replicas must be at least 2 (one pod is no redundancy), got {min_replicas}",
    )
    _check(zones >= 2, f"--zones must be at least 2 (sizing plans for losing one zone), got {zones}")
    _check(wal_bytes_per_row > 0, f"--wal-bytes-per-row must be positive, got {wal_bytes_per_row}")
    _check(bytes_per_event > 0, f"--bytes-per-event must be positive, got {bytes_per_event}")
    _check(
        math.isfinite(api_rps) and api_rps >= 0,
        f"--api-rps must be zero or a positive number of requests/s, got {api_rps}",
    )
    _check(
        math.isfinite(api_cpu_us_per_request) and api_cpu_us_per_request > 0,
        f"--api-cpu-us must be a positive number of microseconds, got {api_cpu_us_per_request}",
    )
    _check(db_pool_max >= 1, f"--db-pool-max must be at least 1, got {db_pool_max}")
    _check(pgbouncer_pool is None or pgbouncer_pool >= 1, f"--pgbouncer-pool must be at least 1, got {pgbouncer_pool}")
    _check(
        pg_max_connections > _PG_RESERVED_CONNECTIONS,
        f"--pg-max-connections must be above the {_PG_RESERVED_CONNECTIONS} reserved for superusers,"
        f" got {pg_max_connections}",
    )

    # Mixed traffic lies between the routes; size for the slower one.
    click_capacity, warnings = _capacity(bench, bench.click, "click")
    pixel_capacity, pixel_warnings = _capacity(bench, bench.pixel, "pixel")
    warnings += pixel_warnings
    capacity = min(click_capacity, pixel_capacity)
    target = max(1, math.floor(capacity * headroom))

    # The API runs in the same process as the hot path and competes for its one core: count its
    # CPU as that many tracked requests' worth. The ScaledObject's trigger counts interactions
    # only, so its threshold stays the tracked target; its CPU trigger is what sees API load.
    cpu_per_request_s = max(bench.click.pod_cpu_s_per_million, bench.pixel.pod_cpu_s_per_million) / 1e6
    needed = peak_rps + api_rps * api_cpu_us_per_request / 1e6 / cpu_per_request_s

    # Minimum: pods that are already up when a send lands. With one zone gone the rest carry the
    # peak at their measured capacity (p99 still within target) for the 15-45 s KEDA needs.
    # Maximum: the peak with a zone gone and every pod back at the target (the headroom restored),
    # and at least one more pod per zone than the minimum, so that the autoscaler always has
    # room to act (min == max would make the ScaledObject a fixed size).
    floor = max(zones, min_replicas or 0)
    low = max(floor, zone_spread(math.ceil(needed / capacity), zones))
    high = max(zone_spread(math.ceil(needed / target), zones), low + zones)

    # CPU: the request is what a pod burns at its target rate (so CPU utilisation 100 % means
    # "at target"); the limit what it burns at saturation, with 20 % for GC and the writer.
    cpu_request_m = max(_CPU_REQUEST_FLOOR_M, _ceil_to(target * cpu_per_request_s * 1000, 50))
    saturation = max(bench.click.rps, bench.pixel.rps)
    cpu_limit_m = max(_CPU_LIMIT_FLOOR_M, cpu_request_m, _ceil_to(saturation * cpu_per_request_s * 1200, 250))

    if target > bench.writer_events_per_s:
        warnings.append(
            f"one pod's target ({target} rps) is above the measured writer rate "
            f"({bench.writer_events_per_s:g} events/s): its backlog would grow at peak"
        )
    if peak_rps > bench.writer_events_per_s:
        source = _WRITER_SOURCE.format(command=bench.command, date=bench.date)
        warnings.append(
            f"the peak ({peak_rps:,.0f} events/s) is above what one primary was measured to take "
            f"({bench.writer_events_per_s:,.0f} events/s, {source}): "
            'plan past one primary (docs/scaling.md, "Past one primary")'
        )
    # Each pod's pool may open up to TRACKD_DB_POOL_MAX connections (its writer holds one while
    # it has a backlog); at max replicas that is what PostgreSQL or PgBouncer must accept.
    connections_max = high * db_pool_max
    usable = pg_max_connections - _PG_RESERVED_CONNECTIONS
    if pgbouncer_pool is None and connections_max > usable:
        warnings.append(
            f"{high} pods x TRACKD_DB_POOL_MAX {db_pool_max} = {connections_max} connections is above PostgreSQL's "
            f"{usable} (max_connections {pg_max_connections} less {_PG_RESERVED_CONNECTIONS} reserved): "
            "put PgBouncer in front (--pgbouncer-pool) or lower TRACKD_DB_POOL_MAX"
        )
    if pgbouncer_pool is not None and pgbouncer_pool < high:
        warnings.append(
            f"the PgBouncer pool ({pgbouncer_pool} server connections) is smaller than the {high} writers at max "
            "replicas: their COPY transactions would queue for a connection"
        )
    if pgbouncer_pool is not None and pgbouncer_pool > usable:
        warnings.append(
            f"the PgBouncer pool ({pgbouncer_pool}) is above PostgreSQL's {usable} usable connections "
            f"(--pg-max-connections {pg_max_connections})"
        )
    if bench.provisional:
        warnings.append(f"the benchmark ({bench.date}) is provisional: re-run `make bench` and size again")

    # Every interaction is one row; opens and clicks alike. The API writes none.
    events_per_day = peak_rps * _SECONDS_PER_DAY
    return Plan(
        peak_rps=peak_rps,
        headroom=headroom,
        capacity_rps=capacity,
        target_rps_per_pod=target,
        min_replicas=low,
        max_replicas=high,
        cpu_request_m=cpu_request_m,
        cpu_limit_m=cpu_limit_m,
        db_rows_per_s=peak_rps,
        wal_mb_per_s=peak_rps * wal_bytes_per_row / 1e6,
        wal_bytes_per_row=wal_bytes_per_row,
        bench_date=bench.date,
        provisional=bench.provisional,
        warnings=tuple(warnings),
        zones=zones,
        min_replicas_floor=min_replicas,
        api_rps=api_rps,
        api_cpu_us_per_request=api_cpu_us_per_request,
        needed_rps=needed,
        events_per_day=events_per_day,
        bytes_per_event=bytes_per_event,
        bytes_per_day=events_per_day * bytes_per_event,
        writer_events_per_s=bench.writer_events_per_s,
        db_pool_max=db_pool_max,
        db_connections_min=low * db_pool_max,
        db_connections_max=connections_max,
        pgbouncer_pool=pgbouncer_pool,
        pg_max_connections=pg_max_connections,
    )


def report(p: Plan) -> str:
    survivors = p.min_replicas - math.ceil(p.min_replicas / p.zones)  # the fullest zone is the one lost
    if p.pgbouncer_pool is None:
        server = f"straight to PostgreSQL (max_connections {p.pg_max_connections})"
    else:
        server = f"through PgBouncer onto {p.pgbouncer_pool} server connections"
    lines = [
        f"benchmark             {p.bench_date}{' (provisional)' if p.provisional else ''}",
        f"peak                  {p.peak_rps:,.0f} interactions/s",
    ]
    if p.api_rps:
        lines.append(
            f"api load              {p.api_rps:,.0f} signing/rewrite requests/s x {p.api_cpu_us_per_request:g} us "
            f"(an estimate) = {p.needed_rps - p.peak_rps:,.0f} tracked requests' worth of CPU"
        )
    lines += [
        f"pod capacity          {p.capacity_rps:,.0f} rps within the p99 target",
        f"headroom              {p.headroom:g} (pods run at {p.headroom:.0%} of capacity)",
        f"target per pod        {p.target_rps_per_pod:,} rps",
        f"replicas              min {p.min_replicas}, max {p.max_replicas}",
        f"zones                 {p.zones}: with one lost, min leaves {survivors} pods for {p.needed_rps:,.0f} rps",
        f"cpu per pod           request {p.cpu_request_m}m, limit {p.cpu_limit_m}m",
        f"postgresql ingest     {p.db_rows_per_s:,.0f} rows/s at peak "
        f"(one primary measured at {p.writer_events_per_s:,.0f} events/s)",
        f"events per day        {p.events_per_day:,.0f} if the peak lasted all day",
        f"bytes per day         {p.bytes_per_day / 1e9:,.1f} GB of table and indexes "
        f"({p.bytes_per_event} bytes/event measured)",
        f"postgresql wal        {p.wal_mb_per_s:,.1f} MB/s at peak ({p.wal_bytes_per_row} bytes/row assumed)",
        f"db connections        {p.db_connections_min} at min, {p.db_connections_max} at max "
        f"(pods x TRACKD_DB_POOL_MAX {p.db_pool_max}), {server}",
    ]
    lines += [f"warning: {w}" for w in p.warnings]
    return "\n".join(lines) + "\n"


def _header(p: Plan) -> str:
    inputs = f"peak {p.peak_rps:g}/s, headroom {p.headroom:g}, zones {p.zones}"
    if p.api_rps:
        inputs += f", api {p.api_rps:g}/s at {p.api_cpu_us_per_request:g} us"
    if p.min_replicas_floor is not None:
        inputs += f", min replicas {p.min_replicas_floor}"
    return (
        "# GENERATED by `trackd sizing --write-overlay` (make sizing): do not edit by hand.\n"
        f"# bench {p.bench_date}{' (provisional)' if p.provisional else ''}, {inputs}\n"
    )


def overlay_files(p: Plan) -> dict[str, str]:
    """The prod overlay's generated patches: ScaledObject bounds and threshold, pod CPU."""
    scaling = _header(p) + (
        "---\n"
        "- op: replace\n  path: /spec/minReplicaCount\n"
        f"  value: {p.min_replicas}\n"
        "- op: replace\n  path: /spec/maxReplicaCount\n"
        f"  value: {p.max_replicas}\n"
        "- op: replace\n  path: /spec/fallback/replicas\n"
        f"  value: {p.max_replicas}\n"
        "- op: replace\n  path: /spec/triggers/0/metadata/threshold\n"
        f'  value: "{p.target_rps_per_pod}"\n'
    )
    resources = _header(p) + (
        "---\n"
        f"apiVersion: apps/v1\nkind: {WORKLOAD_KIND}\nmetadata:\n  name: {WORKLOAD_NAME}\n"
        "spec:\n  template:\n    spec:\n      containers:\n        - name: trackd\n"
        "          resources:\n"
        f"            requests:\n              cpu: {p.cpu_request_m}m\n"
        f"            limits:\n              cpu: {p.cpu_limit_m}m\n"
    )
    return {SCALING_PATCH: scaling, RESOURCES_PATCH: resources}


def write_overlay(p: Plan, directory: Path) -> list[Path]:
    written = []
    for name, text in overlay_files(p).items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
