"""A token has one spelling, one decoding and one answer (issue item 7; findings L1, L2, L5, L8 of
the hostile-clients review), against a real `trackd serve` over raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import time
import uuid

import asyncpg
import pytest

from tests.support import ServerProcess, metric
from tests.test_hostile_protocol import RING, connect, read_until_closed, request
from trackd_links.tokens import KIND_CLICK, KIND_OPEN

pytestmark = pytest.mark.e2e


def seal_click(campaign: str, url: bytes, campaign_len: int | None = None) -> str:
    """A click token sealed with the test key around any bytes (what a sender signing in-process
    could make), bypassing sign_click's URL checks."""
    raw = campaign.encode()
    ids = bytes((len(raw) if campaign_len is None else campaign_len,)) + raw + b"\x03r-1"
    return RING._seal(RING._head(KIND_CLICK, None) + struct.pack(">H", 0) + ids + url)


def counter(server: ServerProcess, name: str, labels: dict[str, str] | None = None) -> float:
    try:
        return metric(server.base_url, name, labels)
    except KeyError:
        return 0.0


def bad_tokens(server: ServerProcess, kind: str = "click") -> float:
    return counter(server, "trackd_interactions_total", {"kind": kind, "outcome": "bad_token"})


def recorded(server: ServerProcess) -> float:
    return counter(server, "trackd_interactions_total", {"outcome": "recorded"})


def events(database_url: str, campaign: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM events WHERE campaign_id = $1", campaign))
        finally:
            await conn.close()

    return asyncio.run(count())


def settled_events(server: ServerProcess, database_url: str, campaign: str) -> int:
    """The events of `campaign` once a later control click is in the database."""
    control = f"control-{uuid.uuid4().hex[:8]}"
    sock = connect(server)
    sock.sendall(request(f"/c/{RING.sign_click(control, 'r-1', 0, 'https://ok.example/')}", version="1.0"))
    assert read_until_closed(sock).startswith(b"HTTP/1.1 302 ")
    sock.close()
    deadline = time.monotonic() + 10
    while events(database_url, control) < 1:
        assert time.monotonic() < deadline, "the control click never reached the database"
        time.sleep(0.05)
    return events(database_url, campaign)


def exchange(server: ServerProcess, data: bytes) -> bytes:
    sock = connect(server)
    with contextlib.suppress(OSError):
        sock.sendall(data)
    answer = read_until_closed(sock)
    sock.close()
    return answer


def test_a_location_with_control_bytes_is_a_bad_token(server: ServerProcess, database_url: str) -> None:
    """L1: the protocol path never writes a split response head."""
    campaign = f"split-{uuid.uuid4().hex[:8]}"
    before = bad_tokens(server)
    for url in (b"https://a.example/\r\nSet-Cookie: x", b"https://a.example/\x00", b"https://a.example/\n",
                b"https://a.example/\x7f", "https://a.example/ü".encode()):  # fmt: skip
        answer = exchange(server, request(f"/c/{seal_click(campaign, url)}", version="1.0"))
        head = answer.partition(b"\r\n\r\n")[0].lower()
        assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
        assert b"set-cookie" not in head and b"location" not in head
    assert bad_tokens(server) == before + 5
    assert settled_events(server, database_url, campaign) == 0


def test_a_signed_payload_that_cannot_be_decoded_is_a_bad_token(server: ServerProcess, database_url: str) -> None:
    """L8: a campaign length byte overrunning the payload: 404, counted once, no error."""
    campaign = f"overrun-{uuid.uuid4().hex[:8]}"
    token = seal_click(campaign, b"https://a.example/", campaign_len=250)
    assert RING.verify(token, KIND_CLICK) is not None
    before, errors = bad_tokens(server), counter(server, "trackd_hot_path_errors_total")
    answer = exchange(server, request(f"/c/{token}", version="1.0"))
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
    assert bad_tokens(server) == before + 1
    assert counter(server, "trackd_hot_path_errors_total") == errors
    assert "IndexError" not in server.log()
    assert settled_events(server, database_url, campaign) == 0


def test_a_recipient_length_overrunning_the_payload_is_a_bad_token(server: ServerProcess, database_url: str) -> None:
    """L8, the other length byte: a recipient length past the payload's end, on a click and on a
    pixel. Sliced unchecked it made a row whose length fields lie (refused by COPY, then a dead
    letter); it is a bad token, counted once, nothing recorded."""
    campaign = f"overrun-r-{uuid.uuid4().hex[:8]}"
    raw = campaign.encode()
    ids = bytes((len(raw),)) + raw + b"\xf0r-1"  # says 240 bytes of recipient, has 3
    click = RING._seal(RING._head(KIND_CLICK, None) + struct.pack(">H", 0) + ids)  # no URL either
    pixel = RING._seal(RING._head(KIND_OPEN, None) + ids)
    assert RING.verify(click, KIND_CLICK) is not None and RING.verify(pixel, KIND_OPEN) is not None
    before_click, before_open = bad_tokens(server), bad_tokens(server, "open")
    errors = counter(server, "trackd_hot_path_errors_total")
    assert exchange(server, request(f"/c/{click}", version="1.0")).startswith(b"HTTP/1.1 404 ")
    answer = exchange(server, request(f"/o/{pixel}.gif", version="1.0"))
    assert answer.startswith(b"HTTP/1.1 200 ") and b"GIF89a" in answer, answer[:200]
    assert bad_tokens(server) == before_click + 1
    assert bad_tokens(server, "open") == before_open + 1
    assert counter(server, "trackd_hot_path_errors_total") == errors
    assert settled_events(server, database_url, campaign) == 0


def test_a_token_has_one_spelling_on_the_wire(server: ServerProcess, database_url: str) -> None:
    """L5: a '%' in the token part is a bad token on the protocol and the ASGI path."""
    campaign = f"spelling-{uuid.uuid4().hex[:8]}"
    click = RING.sign_click(campaign, "r-1", 0, "https://shop.example.com/p")
    pixel = RING.sign_open(campaign, "r-1")
    escaped_click = f"/c/%{ord(click[0]):02X}{click[1:]}"
    escaped_pixel = f"/o/%{ord(pixel[0]):02X}{pixel[1:]}.gif"
    dotted_pixel = f"/o/{pixel}%2Egif"
    before_click, before_open = bad_tokens(server), bad_tokens(server, "open")
    # On the protocol path (each request alone on its connection).
    answer = exchange(server, request(escaped_click, version="1.0"))
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
    for path in (escaped_pixel, dotted_pixel):
        answer = exchange(server, request(path, version="1.0"))
        assert answer.startswith(b"HTTP/1.1 200 ") and b"GIF89a" in answer, answer[:200]
    # On the ASGI path: pipelined behind a click being answered, uvicorn queues them for ASGI.
    other = RING.sign_click(f"other-{uuid.uuid4().hex[:8]}", "r-1", 0, "https://ok.example/")
    answer = exchange(server, request(f"/c/{other}") + request(escaped_click) + request(escaped_pixel)
                      + request(dotted_pixel, version="1.0"))  # fmt: skip
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert statuses == [b"302", b"404", b"200", b"200"], answer[:400]
    assert bad_tokens(server) == before_click + 2
    assert bad_tokens(server, "open") == before_open + 4
    # A query string on a tracked path is ignored (today's behaviour, documented).
    answer = exchange(server, request(f"/c/{click}?utm=x", version="1.0"))
    assert answer.startswith(b"HTTP/1.1 302 ")
    assert settled_events(server, database_url, campaign) == 1


@pytest.mark.parametrize(
    "framing",
    ["Transfer-Encoding: xchunked\r\n\r\nhello", "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n"],
)
def test_a_request_answered_400_records_nothing(server: ServerProcess, database_url: str, framing: str) -> None:
    """L2: a click whose body framing llhttp refuses is not recorded."""
    campaign = f"framing-{uuid.uuid4().hex[:8]}"
    click = RING.sign_click(campaign, "r-1", 0, "https://shop.example.com/p")
    head = request(f"/c/{click}")
    answer = exchange(server, head[:-2] + framing.encode())
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert settled_events(server, database_url, campaign) == 0


def test_a_click_before_garbage_is_answered_before_the_400(server: ServerProcess, database_url: str) -> None:
    """L2: a valid click and garbage in one write: the 302 goes out, then the 400; one event."""
    campaign = f"garbage-{uuid.uuid4().hex[:8]}"
    click = RING.sign_click(campaign, "r-1", 0, "https://shop.example.com/p")
    answer = exchange(server, request(f"/c/{click}") + b"GARBAGE\x01\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 302 "), answer[:200]
    assert b"HTTP/1.1 400 " in answer
    assert settled_events(server, database_url, campaign) == 1


def test_a_click_with_a_body_is_recorded_once_its_message_is_complete(server: ServerProcess,
                                                                       database_url: str) -> None:  # fmt: skip
    campaign = f"body-{uuid.uuid4().hex[:8]}"
    click = RING.sign_click(campaign, "r-1", 0, "https://shop.example.com/p")
    sock = connect(server)
    sock.sendall(request(f"/c/{click}", extra="Content-Length: 5\r\n") + b"hel")
    time.sleep(0.3)
    sock.sendall(b"lo" + request(f"/c/{click}", version="1.0"))
    answer = read_until_closed(sock)
    sock.close()
    assert answer.count(b"HTTP/1.1 302 ") == 2, answer[:400]
    assert settled_events(server, database_url, campaign) == 2
