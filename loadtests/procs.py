"""CPU and memory of the processes under test, read with psutil (no sampling thread needed)."""

from __future__ import annotations

from pathlib import Path

import psutil


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process and of its threads."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def postgres_cpu_seconds(pgdata: Path) -> float:
    """CPU of the whole PostgreSQL server: the postmaster, its live children, and - through the
    postmaster's children_* times - every backend it has already reaped, so a connection that
    closed during a run is still counted."""
    postmaster = psutil.Process(postmaster_pid(pgdata))
    times = postmaster.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in postmaster.children():
        try:
            t = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20
