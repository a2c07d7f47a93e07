"""`trackd explain EVENT_ID` against a real database: cases of the labelled set replayed through
the hot path and judged by the deferred rules, then explained by the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg

from app.db import migrate
from tests.tools.eval_truth import evaluate, load_cases

ROOT = Path(__file__).resolve().parent.parent


def explain(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "explain", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DATABASE_URL": url},
    )  # fmt: skip


async def test_explain_prints_the_evidence_the_verdict_and_the_pattern(fresh_database_url: str) -> None:
    cases = [c for c in load_cases() if c["id"] in ("scan-burst-then-person-click", "safelinks-chrome57-eop-973")]
    assert len(cases) == 2
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await migrate(conn)
        report = await evaluate(conn, cases)
        assert not report.wrong, report.render()
        rows = await conn.fetch(
            "SELECT id, campaign_id, is_machine, machine_reason FROM events ORDER BY campaign_id, occurred_at"
        )
    finally:
        await conn.close()
    burst = next(r for r in rows if r["machine_reason"] and "burst" in r["machine_reason"])
    done = explain(fresh_database_url, str(burst["id"]))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"event      {burst['id']}" in out
    assert "verdict    machine: burst" in out
    assert "method           GET" in out and "since the send" in out
    assert "rules that fired" in out and "burst " in out
    assert "the recipient's events around it" in out and "->" in out

    person = next(r for r in rows if r["campaign_id"] == "eval-scan-burst-then-person-click" and not r["is_machine"])
    out = explain(fresh_database_url, str(person["id"])).stdout
    assert "verdict    person" in out and "(none: a person)" in out

    eop = next(r for r in rows if r["campaign_id"] == "eval-safelinks-chrome57-eop-973")
    out = explain(fresh_database_url, str(eop["id"])).stdout
    assert "scanner_network" in out and "certain network list entry" in out


async def test_explain_says_what_is_wrong_with_its_argument(fresh_database_url: str) -> None:
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    missing = explain(fresh_database_url, str(uuid.uuid4()))
    assert missing.returncode == 1 and "no event" in missing.stderr
    # A version 7 id whose time is past year 9999 (found in review): no event, not a traceback.
    future = explain(fresh_database_url, "ffffffff-ffff-7fff-bfff-ffffffffffff")
    assert future.returncode == 1 and "no event" in future.stderr and "Traceback" not in future.stderr
    bad = explain(fresh_database_url, "not-a-uuid")
    assert bad.returncode == 2 and "is not an event id" in bad.stderr
