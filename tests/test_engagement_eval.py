"""The labelled evaluation set (tests/data/engagement/cases.json) judged by the real hot path
and the deferred rules on a real PostgreSQL: the targets of docs/engagement.md hold (machine
recall at least 95 %, people flagged at most 1 %), and what `make eval-truth` prints is what
this measures."""

from __future__ import annotations

import asyncpg

from tests.tools.eval_truth import evaluate, load_cases


async def test_the_labelled_set_meets_the_targets(fresh_db: asyncpg.Connection) -> None:
    cases = load_cases()
    report = await evaluate(fresh_db, cases)
    text = report.render(verbose=True)
    assert report.overall.machine >= 150 and report.overall.people >= 100, text
    assert report.overall.recall is not None and report.overall.recall >= 0.95, text
    assert report.overall.flagged_share is not None and report.overall.flagged_share <= 0.01, text
    # No class of people pays for the others: each keeps its own share flagged low.
    for name in ("person_browser", "person_mail_client", "mail_proxy"):
        share = report.classes[name].flagged_share
        assert share is not None and share <= 0.05, f"{name}: {share}\n{text}"
    # Every class is measured (none silently empty).
    assert {"person_browser", "person_mail_client", "mail_proxy", "gateway", "preview", "bot", "behaviour"} <= set(
        report.classes
    ), text
