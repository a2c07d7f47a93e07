"""The command line: `trackd serve` on the embedded database (what `make run` does), `trackd sign`,
`trackd decode` (and trackd_links.tokens.diagnose, its reasons), `trackd keygen`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.pgserver import EmbeddedPostgres
from tests.support import API_KEY, ROOT, SIGNING_KEYS, ServerProcess, postgres_dir, v1_payload
from trackd_links.tokens import KIND_CLICK, KIND_OPEN, KeyRing, diagnose

RING = KeyRing.from_specs(SIGNING_KEYS.split(","))
VECTORS = Path(__file__).parent / "vectors"
KINDS = {"open": KIND_OPEN, "click": KIND_CLICK}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_sign_prints_pixel_and_click_urls() -> None:
    env = {"TRACKD_SIGNING_KEYS": SIGNING_KEYS, "TRACKD_PUBLIC_URL": "https://t.example.com/"}
    result = run_cli("sign", "--campaign", "C", "--recipient", "R", "https://a.example/x?y=1", "https://b.example/",
                     env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert len(lines) == 3
    ring = KeyRing.from_specs(SIGNING_KEYS.split(","))
    assert lines[0].startswith("https://t.example.com/o/") and lines[0].endswith(".gif")
    assert ring.verify(lines[0].removeprefix("https://t.example.com/o/").removesuffix(".gif"), KIND_OPEN)
    for line in lines[1:]:
        assert ring.verify(line.removeprefix("https://t.example.com/c/"), KIND_CLICK)


def test_sign_refuses_bad_urls() -> None:
    result = run_cli("sign", "--campaign", "C", "--recipient", "R", "javascript:alert(1)",
                     env={"TRACKD_SIGNING_KEYS": SIGNING_KEYS})  # fmt: skip
    assert result.returncode == 2 and "javascript" in result.stderr


def test_sign_passes_name_message_part_honeypot_to_the_signer() -> None:
    env = {"TRACKD_SIGNING_KEYS": SIGNING_KEYS, "TRACKD_PUBLIC_URL": "https://t.example.com"}
    result = run_cli("sign", "--campaign", "C", "--recipient", "R", "--link-name", "hero-cta", "--message-id",
                     "<m-1@mail.example>", "--part", "html", "--honeypot", "--sent-at", "1700000000",
                     "https://a.example/", "https://b.example/", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    pixel, *clicks = result.stdout.split()
    opened = RING.open(pixel.removeprefix("https://t.example.com/o/").removesuffix(".gif"), KIND_OPEN)
    assert opened is not None
    assert (opened.message_id, opened.sent_at, opened.link_name, opened.part) == ("<m-1@mail.example>", 1700000000,
                                                                                  None, None)  # fmt: skip
    for index, (line, url) in enumerate(zip(clicks, ["https://a.example/", "https://b.example/"], strict=True)):
        claims = RING.open(line.removeprefix("https://t.example.com/c/"), KIND_CLICK)
        assert claims is not None
        assert (claims.link_index, claims.url, claims.link_name, claims.message_id, claims.part, claims.honeypot,
                claims.sent_at) == (index, url, "hero-cta", "<m-1@mail.example>", "html", True, 1700000000)  # fmt: skip
    # Without the options: part api, no name, no message id, not a honeypot (the signer's defaults).
    plain = run_cli("sign", "--campaign", "C", "--recipient", "R", "https://a.example/", env=env)
    claims = RING.open(plain.stdout.split()[1].removeprefix("https://t.example.com/c/"), KIND_CLICK)
    assert claims is not None and (claims.part, claims.link_name, claims.message_id, claims.honeypot) == (
        "api", None, None, False)  # fmt: skip


def test_sign_refuses_a_bad_link_name() -> None:
    result = run_cli("sign", "--campaign", "C", "--recipient", "R", "--link-name", "x" * 65, "https://a.example/",
                     env={"TRACKD_SIGNING_KEYS": SIGNING_KEYS})  # fmt: skip
    assert result.returncode == 2 and "link_name" in result.stderr


def test_keygen_makes_a_usable_key() -> None:
    result = run_cli("keygen", "--kid", "2026-11", env={"TRACKD_SIGNING_KEYS": ""})
    assert result.returncode == 0, result.stderr
    # stdout is the key and nothing else, so that $(trackd keygen) can be used as it is.
    assert result.stdout.count("\n") == 1
    KeyRing.from_specs([result.stdout.strip()])
    assert "first" in result.stderr and "years" in result.stderr


def test_keygen_advises_rotation_naming_the_existing_kids_without_their_secrets() -> None:
    result = run_cli("keygen", "--kid", "k3", env={"TRACKD_SIGNING_KEYS": SIGNING_KEYS})
    assert result.returncode == 0, result.stderr
    new = result.stdout.strip()
    assert new.startswith("k3:") and "\n" not in new
    advice = result.stderr
    assert "k3, k2, k1" in advice  # the new key first, the existing ones after, in their order
    assert '"k3:<the new secret above>,$TRACKD_SIGNING_KEYS"' in advice
    for spec in SIGNING_KEYS.split(","):
        assert spec.partition(":")[2] not in advice, "an existing secret was printed"
    assert new.partition(":")[2] not in advice  # the new secret is on stdout only
    # What the advice says to do makes a ring that mints with k3 and still opens k2's and k1's links.
    old_click = RING.sign_click("C", "R", 0, "https://a.example/")
    rotated = KeyRing.from_specs([new, *SIGNING_KEYS.split(",")])
    assert rotated.open(old_click, KIND_CLICK) is not None
    claims = rotated.open(rotated.sign_click("C", "R", 0, "https://a.example/"), KIND_CLICK)
    assert claims is not None and claims.kid == "k3"
    # --help says where each part of the output goes.
    helptext = run_cli("keygen", "--help").stdout
    assert "stdout" in helptext and "stderr" in helptext


def test_keygen_refuses_a_kid_already_in_the_ring_or_invalid() -> None:
    result = run_cli("keygen", "--kid", "k1", env={"TRACKD_SIGNING_KEYS": SIGNING_KEYS})
    assert result.returncode == 2 and result.stdout == "" and "k1" in result.stderr
    result = run_cli("keygen", "--kid", "no spaces", env={"TRACKD_SIGNING_KEYS": ""})
    assert result.returncode == 2 and result.stdout == ""


# -- trackd decode ---------------------------------------------------------------------------


def decode(*args: str, keys: str = SIGNING_KEYS) -> subprocess.CompletedProcess[str]:
    return run_cli("decode", *args, env={"TRACKD_SIGNING_KEYS": keys})


def fields_of(stdout: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in stdout.splitlines())


def test_decode_prints_every_field_of_a_click_and_an_open() -> None:
    click = RING.sign_click("spring-sale", "r-42", 3, "https://shop.example/sale?a=1", sent_at=1700000000,
                            link_name="hero-cta", message_id="<m@x>", part="text", honeypot=True)  # fmt: skip
    result = decode(f"https://t.example.com/c/{click}")  # a full URL: the kind from its path
    assert result.returncode == 0, result.stderr
    assert fields_of(result.stdout) == {
        "version": "2", "kind": "click", "kid": "k2", "sent_at": "2023-11-14T22:13:20Z",
        "sent_at_unix": "1700000000", "link_index": "3", "campaign_id": "spring-sale", "recipient_id": "r-42",
        "url": "https://shop.example/sale?a=1", "link_name": "hero-cta", "message_id": "<m@x>", "part": "text",
        "honeypot": "true",
    }  # fmt: skip
    pixel = RING.sign_open("spring-sale", "r-42", sent_at=0)
    for given in (f"/o/{pixel}.gif", pixel):  # a path; a bare token without --kind: both kinds tried
        result = decode(given)
        assert result.returncode == 0, result.stderr
        fields = fields_of(result.stdout)
        assert fields["kind"] == "open" and fields["sent_at"] == "1970-01-01T00:00:00Z"
        assert (fields["link_index"], fields["url"], fields["part"], fields["message_id"]) == ("-", "-", "-", "-")
    # --json for scripts; ids that could be misread on a line are quoted in the text form.
    odd = RING.sign_open("-", "line\nbreak", sent_at=5)
    as_json: dict[str, Any] = json.loads(decode("--json", "--kind", "open", odd).stdout)
    assert as_json["campaign_id"] == "-" and as_json["recipient_id"] == "line\nbreak" and as_json["url"] is None
    text = fields_of(decode("--kind", "open", odd).stdout)
    assert (text["campaign_id"], text["recipient_id"]) == ('"-"', '"line\\nbreak"')


def test_decode_opens_a_version_1_token_while_its_key_is_kept() -> None:
    v1 = RING._seal(v1_payload(RING, KIND_CLICK, "C", "R", "https://a.example/", link_index=2, sent_at=10))
    result = decode(f"http://127.0.0.1:8000/c/{v1}")
    assert result.returncode == 0, result.stderr
    fields = fields_of(result.stdout)
    assert (fields["version"], fields["link_index"], fields["url"], fields["part"]) == ("1", "2", "https://a.example/",
                                                                                      "api")  # fmt: skip


def _flip(token: str, at: int) -> str:
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]


def test_decode_says_why_a_token_does_not_open() -> None:
    # A URL that makes the token's length 2 or 3 more than a multiple of 4: its last character
    # then carries unused low bits, which must be zero.
    click = next(t for t in (RING.sign_click("C", "R", 0, "https://a.example/" + "x" * i) for i in range(4))
                 if len(t) % 4 in (2, 3))  # fmt: skip
    n = len(click)
    cut = click[: n - (n % 4) - 3]  # 1 more than a multiple of 4
    bad_vector = next(b for b in json.loads((VECTORS / "bad_tokens.json").read_text("utf-8"))
                      if b["name"] == "v2-url-space")  # fmt: skip
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # The last character with an unused low bit set: the same bytes, another spelling.
    other_spelling = click[:-1] + alphabet[alphabet.index(click[-1]) | 1]
    cases = [
        (("abc+def/ghi=jkl",), SIGNING_KEYS, "not base64url: '+'"),
        ((cut,), SIGNING_KEYS, "wrong length"),
        (("A" * 20,), SIGNING_KEYS, "wrong length: 20 characters"),
        ((other_spelling,), SIGNING_KEYS, "wrong spelling"),
        (("--kind", "open", click), SIGNING_KEYS, "wrong kind: this is a click token"),
        ((click,), "k9:some-other-secret-0000", "unknown kid 'k2'"),
        ((click,), "k2:not-the-secret-of-k2-at-all", "tag does not match"),
        ((_flip(click, n // 2),), SIGNING_KEYS, "tag does not match"),
        ((f"/c/{bad_vector['token']}",), ",".join(bad_vector["keys"]),
         "authentic (key 'k1') but malformed: a URL outside printable ASCII"),
    ]  # fmt: skip
    for args, keys, reason in cases:
        result = decode(*args, keys=keys)
        assert result.returncode == 1, (args, result.stdout)
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and reason in lines[0], (args, result.stderr)


def test_decode_refuses_what_is_no_tracked_url() -> None:
    click = RING.sign_click("C", "R", 0, "https://a.example/")
    for args in (("https://t.example.com/x/abc",), (f"https://t.example.com/o/{click}",),
                 ("--kind", "open", f"https://t.example.com/c/{click}")):  # fmt: skip
        result = decode(*args)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, (args, result.stderr)


def test_diagnose_agrees_with_open() -> None:
    """diagnose() is "" exactly when KeyRing.open gives the fields: for the vectors, the key-sealed
    bad tokens, and every single-character change of a click and an open."""
    for vector in json.loads((VECTORS / "tokens.json").read_text("utf-8")):
        ring = KeyRing.from_specs(vector["keys"])
        kind = KINDS[vector["kind"]]
        assert ring.open(vector["token"], kind) is not None
        assert diagnose(ring, vector["token"], kind) == "" == diagnose(ring, vector["token"])
    for bad in json.loads((VECTORS / "bad_tokens.json").read_text("utf-8")):
        ring = KeyRing.from_specs(bad["keys"])
        assert ring.open(bad["token"], KINDS[bad["kind"]]) is None
        assert diagnose(ring, bad["token"], KINDS[bad["kind"]]), bad["name"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for token in (RING.sign_click("C", "R", 1, "https://a.example/", link_name="n"),
                  RING.sign_open("C", "R", message_id="m")):  # fmt: skip
        for at in range(len(token)):
            for char in (alphabet[(alphabet.index(token[at]) + 1) % 64], "="):
                changed = token[:at] + char + token[at + 1 :]
                for as_kind in (KIND_CLICK, KIND_OPEN):
                    opens = RING.open(changed, as_kind) is not None
                    assert (diagnose(RING, changed, as_kind) == "") == opens, (changed, as_kind)


def _click(server: ServerProcess, campaign: str) -> None:
    signed = httpx.post(
        f"{server.base_url}/v1/tracking-urls",
        json={"campaign_id": campaign, "recipient_id": "r", "links": ["https://example.com/"]},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()
    assert httpx.get(signed["click_urls"][0]).status_code == 302


def _clicks(server: ServerProcess, campaign: str) -> int:
    stats = httpx.get(
        f"{server.base_url}/v1/campaigns/{campaign}/stats", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    return stats.json()["clicks"]


@pytest.mark.e2e
def test_serve_on_embedded_postgres_stops_it_and_reuses_its_data() -> None:
    """`make run`: no DATABASE_URL, so trackd starts PostgreSQL in its data directory, and stops
    it on SIGTERM; the next start finds the same data."""
    with postgres_dir() as data_dir:
        _serve_twice(data_dir)


def _serve_twice(tmp_path: Path) -> None:
    campaign = f"embedded-{uuid.uuid4()}"
    server = ServerProcess(tmp_path, database_url="", env={"TRACKD_SIGNING_KEYS": ""})
    pg = EmbeddedPostgres(tmp_path / "pg")
    with server.start(timeout=60):
        assert pg.is_running()
        _click(server, campaign)
        assert (tmp_path / "dev-signing-key").exists()  # no keys set: a dev key kept for next time
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete: -15 is a clean exit.
    assert server.proc is not None and server.proc.returncode in (0, -15), server.log()
    assert "Application shutdown complete" in server.log()
    assert not pg.is_running(), "the embedded PostgreSQL must stop with the service"
    assert "1 events not committed" not in server.log()

    # Ctrl-C in `make run` is a SIGINT to the foreground process group: the same clean stop.
    again = ServerProcess(tmp_path, database_url="", env={"TRACKD_SIGNING_KEYS": ""}).start(timeout=60)
    assert _clicks(again, campaign) == 1
    again.signal(signal.SIGINT)
    assert again.proc is not None and again.proc.wait(60) in (0, -signal.SIGINT, 1), again.log()
    assert "Application shutdown complete" in again.log()
    assert not pg.is_running()


# -- trackd erase / verify (app/lifecycle.py) ---------------------------------------------------


@pytest.fixture
async def lifecycle_db(admin_dsn: str) -> Any:
    import asyncpg

    from app.db import migrate
    from tests.conftest import create_database

    url = await create_database(admin_dsn)
    conn = await asyncpg.connect(url)
    await conn.execute("SET TIME ZONE 'UTC'")
    await migrate(conn)
    try:
        yield url, conn
    finally:
        await conn.close()


def _made_up(campaigns: int = 2, recipients: int = 5) -> list[Any]:
    import datetime as dt

    from tests.rollup_support import BASE, Ev

    return [
        Ev(f"c{c}", kind, f"r{r}", r % 2 if kind == "click" else None, BASE + dt.timedelta(minutes=r + 3 * c),
           BASE, r == 1, "prefetch" if r == 1 else None)
        for c in range(campaigns) for r in range(recipients) for kind in ("open", "click")
    ]  # fmt: skip


async def test_erase_removes_a_recipient_everywhere_as_owner_or_service_role(lifecycle_db: Any) -> None:
    import secrets

    from tests.rollup_support import assert_exact, insert

    url, conn = lifecycle_db
    await insert(conn, _made_up())
    done = run_cli("erase", "--recipient", "r3", env={"DATABASE_URL": url})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == 'erased 4 events of recipient "r3"'
    assert await conn.fetchval("SELECT count(*) FROM events WHERE recipient_id = 'r3'") == 0
    assert await conn.fetchval("SELECT count(*) FROM recipient_touch WHERE recipient_id = 'r3'") == 0
    await assert_exact(conn)

    # The service role may erase too (trackd_erase_recipient runs with the owner's rights).
    role = f"svc_{secrets.token_hex(4)}"
    await conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE trackd_service")
    as_service = url.replace("postgres@", f"{role}@", 1)
    again = run_cli("erase", "--recipient", "r4", env={"DATABASE_URL": as_service})
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == 'erased 4 events of recipient "r4"'
    await assert_exact(conn)
    # And verify, which only reads; --repair needs the owner.
    assert run_cli("verify", env={"DATABASE_URL": as_service}).returncode == 0
    nothing = run_cli("erase", "--recipient", "nobody", env={"DATABASE_URL": url})
    assert nothing.returncode == 0 and nothing.stdout.startswith("erased 0 events")


async def test_verify_exits_1_naming_the_drift_and_repair_makes_it_exact(lifecycle_db: Any, tmp_path: Path) -> None:
    from tests.rollup_support import insert

    url, conn = lifecycle_db
    env = {"DATABASE_URL": url}
    await insert(conn, _made_up())
    exact = run_cli("verify", "--metrics-file", str(tmp_path / "trackd.prom"), env=env)
    assert exact.returncode == 0 and exact.stdout.startswith("exact: every rollup of every campaign"), exact.stdout
    assert "trackd_rollup_drift 0.0" in (tmp_path / "trackd.prom").read_text()

    # One number made wrong, as the owner: the line names the rollup, campaign and key.
    await conn.execute(
        "UPDATE rollup_totals SET events = events + 5 WHERE ctid = (SELECT ctid FROM rollup_totals"
        " WHERE campaign_id = 'c1' AND kind = 'open' AND link_index = -1 AND reason = '' LIMIT 1)"
    )
    wrong = run_cli("verify", "--metrics-file", str(tmp_path / "trackd.prom"), env=env)
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "totals\tc1\topen/-1/\t4\t9" in wrong.stdout.splitlines(), wrong.stdout
    assert "drift: 1 rollup numbers of 1 campaigns differ" in wrong.stdout
    assert "trackd_rollup_drift 1.0" in (tmp_path / "trackd.prom").read_text()
    assert run_cli("verify", "--campaign", "c0", env=env).returncode == 0  # the other one is exact

    repaired = run_cli("verify", "--repair", env=env)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "rebuilt the rollups of 1 campaigns: c1" in repaired.stdout
    assert run_cli("verify", env=env).returncode == 0


async def test_verify_shows_50_lines_then_counts(lifecycle_db: Any) -> None:
    from tests.rollup_support import insert

    url, conn = lifecycle_db
    await insert(conn, _made_up(campaigns=1, recipients=60))
    await conn.execute("UPDATE recipient_touch SET first_at = first_at - interval '1 second'")
    wrong = run_cli("verify", env={"DATABASE_URL": url})
    assert wrong.returncode == 1
    lines = wrong.stdout.splitlines()
    assert lines[0] == "rollup\tcampaign\tkey\texpected\tactual"
    rows = [line for line in lines[1:] if line.startswith("touch\t")]
    assert len(rows) == 50
    total = 60 * 2 + 30 + 30  # opens and clicks of each recipient, and each one's link
    assert f"... and {total - 50} more" in lines, lines[-3:]


def test_verify_says_when_it_cannot_reach_the_database() -> None:
    done = run_cli("verify", env={"DATABASE_URL": "postgresql://u@127.0.0.1:1/db"})
    assert done.returncode == 2 and done.stderr.startswith("trackd verify: "), done.stderr
