"""Client addresses: the socket peer unless it is a trusted proxy; anonymised, kept or dropped.
User agents trimmed. Machine traffic marked."""

from __future__ import annotations

import ipaddress
import uuid

import asyncpg
import httpx
import pytest

from app.copyrows import RowEncoder, decode_row
from app.events import RawEvent, RowMaker
from app.settings import Settings
from app.verdicts.rules import machine_reason
from tests.support import API_KEY, running, v1_payload, wait_for_count
from trackd_links.tokens import KIND_OPEN, KeyRing

RING = KeyRing.from_specs(["k1:privacy-test-secret-0123"])


def maker(**env: object) -> RowMaker:
    return RowMaker(Settings(**env))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:abcd:1234:5678::1", "2001:db8:abcd::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),
        ("not-an-ip", None),
        (None, None),
    ],
)
def test_anonymised_by_default(peer: str | None, expected: str | None) -> None:
    assert maker().ip_value(peer, None) == expected


def test_full_and_drop_modes() -> None:
    assert maker(ip_mode="full").ip_value("203.0.113.77", None) == "203.0.113.77"
    assert maker(ip_mode="drop").ip_value("203.0.113.77", None) is None


def test_forwarded_for_only_from_trusted_proxies() -> None:
    trusting = maker(trusted_proxies=["10.0.0.0/8"], ip_mode="full")
    assert trusting.ip_value("10.1.2.3", b"198.51.100.7") == "198.51.100.7"
    # The rightmost untrusted hop: a client cannot spoof by prepending addresses.
    assert trusting.ip_value("10.1.2.3", b"1.2.3.4, 198.51.100.7, 10.9.9.9") == "198.51.100.7"
    # A peer that is not a trusted proxy: its header is ignored.
    assert trusting.ip_value("192.0.2.50", b"198.51.100.7") == "192.0.2.50"
    # No proxies configured: the header is never used.
    assert maker(ip_mode="full").ip_value("10.1.2.3", b"198.51.100.7") == "10.1.2.3"
    # Garbage in the header: stop at the last good hop.
    assert trusting.ip_value("10.1.2.3", b"garbage, 10.0.0.5") == "10.0.0.5"


def test_row_trims_and_classifies() -> None:
    payload = v1_payload(RING, KIND_OPEN, "c", "r")  # format 1 records hold version 1 payloads
    event = RawEvent(1 << 80, 1_700_000_000.5, False, payload, "192.0.2.1", None, b"Mozilla/5.0")
    encoder = RowEncoder(Settings())
    row = decode_row(encoder.from_event(event)[0])
    assert row["kind"] == "open" and row["is_machine"] is True and row["machine_reason"] == "apple_mpp"
    assert row["ip"] == "192.0.2.0/24"
    head = decode_row(encoder.from_event(event._replace(is_head=True, user_agent=b"\xff\xfebad\x00ua"))[0])
    assert head["user_agent"] == "\ufffd\ufffdbad\ufffdua" and head["machine_reason"] == "head"
    assert head["evidence"] == 1  # a format 1 record kept the method (HEAD), not the other headers


@pytest.mark.parametrize(
    ("kind", "head", "ua", "reason"),
    [
        ("click", False, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120 Safari/537.36", None),
        ("click", True, "Mozilla/5.0 (Windows NT 10.0) Chrome/120", "head"),
        ("click", False, "Barracuda Sentinel (EE)", "scanner_user_agent"),
        ("click", False, "Mozilla/5.0 (compatible; Googlebot/2.1)", "declared_bot"),
        ("open", False, "Mozilla/5.0", "apple_mpp"),
        ("click", False, "Mozilla/5.0", "minimal_user_agent"),
        ("open", False, None, "no_user_agent"),
        ("click", True, None, "head,no_user_agent"),
        ("click", False, "python-httpx/0.28.1", "http_library"),
    ],
)
def test_machine_reasons(kind: str, head: bool, ua: str | None, reason: str | None) -> None:
    assert machine_reason(kind, 1 if head else 0, ua) == reason


async def test_end_to_end_trusted_proxy_and_trimmed_user_agent(tmp_path, database_url: str) -> None:
    env = {"TRACKD_TRUSTED_PROXIES": "127.0.0.1/32", "TRACKD_USER_AGENT_MAX_BYTES": "64"}
    campaign = f"priv-{uuid.uuid4()}"
    with running(tmp_path, database_url, env=env) as srv:
        signed = httpx.post(
            f"{srv.base_url}/v1/tracking-urls",
            json={"campaign_id": campaign, "recipient_id": "r", "links": ["https://example.com/"]},
            headers={"Authorization": f"Bearer {API_KEY}"},
        ).json()
        path = httpx.URL(signed["click_urls"][0]).raw_path.decode()
        headers = {"X-Forwarded-For": "198.51.100.200", "User-Agent": "U" * 5000}
        assert httpx.get(srv.base_url + path, headers=headers).status_code == 302
    conn = await asyncpg.connect(database_url)
    try:
        await wait_for_count(conn, "SELECT count(*) FROM events WHERE campaign_id = $1", campaign, expected=1)
        row = await conn.fetchrow("SELECT ip, user_agent FROM events WHERE campaign_id = $1", campaign)
    finally:
        await conn.close()
    assert str(row["ip"]) == "198.51.100.0/24"
    assert row["user_agent"] == "U" * 64


def test_a_long_forwarded_for_is_not_kept_in_the_client_cache() -> None:
    encoder = RowEncoder(Settings(trusted_proxies=["10.0.0.0/8"]))  # type: ignore[arg-type]
    long_xff = b", ".join(b"198.51.100.%d" % (i % 250) for i in range(40))
    assert len(long_xff) > 256
    field = encoder.client("10.1.2.3", long_xff).field
    assert decode_row_ip(field) == "198.51.100.0/24"
    assert encoder._client_cached.cache_info().currsize == 0
    assert not hasattr(encoder.maker.ip_value, "cache_info")  # and no cache beneath it keeps it
    encoder.client("10.1.2.3", b"198.51.100.7")
    assert encoder._client_cached.cache_info().currsize == 1


def decode_row_ip(field: bytes) -> str:
    _, bits, _, n = field[4:8]
    return f"{ipaddress.ip_address(field[8 : 8 + n])}/{bits}"
