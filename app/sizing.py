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
DEFAULT_MIN_REPLICAS = 3  # one per zone: losing a zone still leaves two
# WAL written per committed event row, PK index entry and record headers included. Measured on
# the provisional run (docs/scaling.md): 539 bytes for a click with a 120-byte user agent.
DEFAULT_WAL_BYTES_PER_ROW = 540
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


def plan(
    bench: Bench,
    peak_rps: float,
    headroom: float = DEFAULT_HEADROOM,
    min_replicas: int = DEFAULT_MIN_REPLICAS,
    wal_bytes_per_row: int = DEFAULT_WAL_BYTES_PER_ROW,
) -> Plan:
    """Size for `peak_rps` interactions/s with pods run at `headroom` x their measured capacity."""
    if not math.isfinite(peak_rps) or peak_rps <= 0:
        raise SizingError(f"--peak must be a positive number of interactions/s, got {peak_rps}")
    if not math.isfinite(headroom) or not 0 < headroom <= 1:
        raise SizingError(f"--headroom must be in (0, 1], got {headroom}")
    if min_replicas < 2:
        raise SizingError(f"--min-replicas must be at least 2 (one pod is no redundancy), got {min_replicas}")
    if wal_bytes_per_row <= 0:
        raise SizingError(f"--wal-bytes-per-row must be positive, got {wal_bytes_per_row}")

    # Mixed traffic lies between the routes; size for the slower one.
    click_capacity, warnings = _capacity(bench, bench.click, "click")
    pixel_capacity, pixel_warnings = _capacity(bench, bench.pixel, "pixel")
    warnings += pixel_warnings
    capacity = min(click_capacity, pixel_capacity)
    target = max(1, math.floor(capacity * headroom))
    max_replicas = max(min_replicas, math.ceil(peak_rps / target))

    # CPU: the request is what a pod burns at its target rate (so CPU utilisation 100 % means
    # "at target"); the limit what it burns at saturation, with 20 % for GC and the writer.
    cpu_per_request_s = max(bench.click.pod_cpu_s_per_million, bench.pixel.pod_cpu_s_per_million) / 1e6
    cpu_request_m = max(_CPU_REQUEST_FLOOR_M, _ceil_to(target * cpu_per_request_s * 1000, 50))
    saturation = max(bench.click.rps, bench.pixel.rps)
    cpu_limit_m = max(_CPU_LIMIT_FLOOR_M, cpu_request_m, _ceil_to(saturation * cpu_per_request_s * 1200, 250))

    if target > bench.writer_events_per_s:
        warnings.append(
            f"one pod's target ({target} rps) is above the measured writer rate "
            f"({bench.writer_events_per_s:g} events/s): its backlog would grow at peak"
        )
    if bench.provisional:
        warnings.append(f"the benchmark ({bench.date}) is provisional: re-run `make bench` and size again")

    # Every interaction is one row; opens and clicks alike.
    return Plan(
        peak_rps=peak_rps,
        headroom=headroom,
        capacity_rps=capacity,
        target_rps_per_pod=target,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        cpu_request_m=cpu_request_m,
        cpu_limit_m=cpu_limit_m,
        db_rows_per_s=peak_rps,
        wal_mb_per_s=peak_rps * wal_bytes_per_row / 1e6,
        wal_bytes_per_row=wal_bytes_per_row,
        bench_date=bench.date,
        provisional=bench.provisional,
        warnings=tuple(warnings),
    )


def report(p: Plan) -> str:
    lines = [
        f"benchmark             {p.bench_date}{' (provisional)' if p.provisional else ''}",
        f"peak                  {p.peak_rps:,.0f} interactions/s",
        f"pod capacity          {p.capacity_rps:,.0f} rps within the p99 target",
        f"headroom              {p.headroom:g} (pods run at {p.headroom:.0%} of capacity)",
        f"target per pod        {p.target_rps_per_pod:,} rps",
        f"replicas              min {p.min_replicas}, max {p.max_replicas}",
        f"cpu per pod           request {p.cpu_request_m}m, limit {p.cpu_limit_m}m",
        f"postgresql ingest     {p.db_rows_per_s:,.0f} rows/s at peak",
        f"postgresql wal        {p.wal_mb_per_s:,.1f} MB/s at peak ({p.wal_bytes_per_row} bytes/row assumed)",
    ]
    lines += [f"warning: {w}" for w in p.warnings]
    return "\n".join(lines) + "\n"


def _header(p: Plan) -> str:
    return (
        "# GENERATED by `trackd sizing --write-overlay` (make sizing): do not edit by hand.\n"
        f"# bench {p.bench_date}{' (provisional)' if p.provisional else ''}, peak {p.peak_rps:g}/s, "
        f"headroom {p.headroom:g}, min replicas {p.min_replicas}\n"
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
