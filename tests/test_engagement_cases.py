"""Schema checks for the labelled engagement evaluation set (tests/data/engagement/cases.json).

The set is the truth, as public sources describe it, for judging opens and clicks as a person's
or a machine's. These tests only keep the file well formed; they do not classify anything.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

CASES_PATH = Path(__file__).parent / "data" / "engagement" / "cases.json"

CLASSES = {
    "person_browser": 25,
    "person_mail_client": 25,
    "mail_proxy": 15,
    "gateway": 25,
    "preview": 25,
    "bot": 25,
    "behaviour": 25,
}
CASE_REQUIRED = {"id", "class", "source", "events"}
CASE_OPTIONAL = {"note", "limit", "links"}
EVENT_REQUIRED = {"t", "kind", "ua", "address", "machine"}
EVENT_OPTIONAL = {"link", "recipient", "method", "headers"}
KINDS = {"open", "click", "honeypot"}
METHODS = {"GET", "HEAD"}
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
MIN_CASES = 150


def _load() -> list[dict[str, Any]]:
    data = json.loads(CASES_PATH.read_text(encoding="utf-8"))
    assert isinstance(data, list)
    return data


CASES = _load()


def _case_id(case: dict[str, Any]) -> str:
    return str(case.get("id"))


def test_enough_cases() -> None:
    assert len(CASES) >= MIN_CASES


def test_ids_unique() -> None:
    counts = Counter(_case_id(c) for c in CASES)
    assert [i for i, n in counts.items() if n > 1] == []


def test_every_class_has_its_minimum() -> None:
    counts = Counter(c.get("class") for c in CASES)
    for cls, minimum in CLASSES.items():
        assert counts[cls] >= minimum, (cls, counts[cls])


def test_file_is_pretty_printed() -> None:
    text = CASES_PATH.read_text(encoding="utf-8")
    assert text == json.dumps(CASES, indent=2, ensure_ascii=False) + "\n"


def _check_headers(headers: object) -> None:
    assert isinstance(headers, dict)
    for name, value in headers.items():
        assert isinstance(name, str) and HEADER_NAME.match(name), name
        assert name != "user-agent", "the UA goes in 'ua'"
        assert isinstance(value, str)


def _check_event(event: object, links: int) -> float:
    assert isinstance(event, dict)
    keys = set(event)
    assert EVENT_REQUIRED <= keys, EVENT_REQUIRED - keys
    assert keys <= EVENT_REQUIRED | EVENT_OPTIONAL, keys - EVENT_REQUIRED - EVENT_OPTIONAL
    t = event["t"]
    assert isinstance(t, float) and t >= 0.0
    kind = event["kind"]
    assert kind in KINDS
    if kind == "click":
        link = event.get("link")
        assert isinstance(link, int) and not isinstance(link, bool)
        assert 0 <= link < links
    else:
        assert "link" not in event
    ua = event["ua"]
    assert ua is None or isinstance(ua, str)
    ipaddress.ip_address(event["address"])
    assert isinstance(event["machine"], bool)
    assert event.get("method", "GET") in METHODS
    recipient = event.get("recipient", "r1")
    assert isinstance(recipient, str) and recipient
    if "headers" in event:
        _check_headers(event["headers"])
    return t


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_case_schema(case: dict[str, Any]) -> None:
    keys = set(case)
    assert CASE_REQUIRED <= keys, CASE_REQUIRED - keys
    assert keys <= CASE_REQUIRED | CASE_OPTIONAL, keys - CASE_REQUIRED - CASE_OPTIONAL
    assert isinstance(case["id"], str) and SLUG.match(case["id"])
    assert case["class"] in CLASSES
    assert isinstance(case["source"], str) and case["source"].strip()
    for optional in ("note", "limit"):
        if optional in case:
            assert isinstance(case[optional], str) and case[optional].strip()
    links = case.get("links", 3)
    assert isinstance(links, int) and not isinstance(links, bool) and links >= 1
    events = case["events"]
    assert isinstance(events, list) and events
    times = [_check_event(e, links) for e in events]
    assert times == sorted(times), "t must ascend within a case"


def test_limit_cases_hold_a_machine() -> None:
    for case in CASES:
        if "limit" in case:
            assert any(e["machine"] for e in case["events"]), case["id"]


def test_both_truths_present() -> None:
    truths = Counter(e["machine"] for c in CASES for e in c["events"])
    assert truths[True] > 0 and truths[False] > 0
