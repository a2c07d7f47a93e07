"""`trackd rewrite` as a real subprocess (issue 15): one email for one recipient to stdout or
files, the batch form (an email and a CSV of recipients to a directory), errors as one line and a
non-zero exit, and links that a real server redirects to exactly their targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, SIGNING_KEYS, ServerProcess
from trackd_links.tokens import KIND_CLICK, KIND_OPEN, KeyRing

RING = KeyRing.from_specs(SIGNING_KEYS.split(","))
PUBLIC = "https://t.example.com"
ENV = {"TRACKD_SIGNING_KEYS": SIGNING_KEYS, "TRACKD_PUBLIC_URL": PUBLIC}
HTML = (
    '<html><body><a href="https://shop.example/p?a=1&amp;b=2">Shop</a> <a href="mailto:x@example.com">m</a>'
    "</body></html>\n"
)
TEXT = "Shop: https://shop.example/p?a=1&b=2\n"


def run(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "rewrite", *args], cwd=ROOT, capture_output=True, timeout=60,
        input=stdin, env={**os.environ, **ENV, **(env or {})},
    )  # fmt: skip


def token_of(url: str, kind: int) -> bytes | None:
    if kind == KIND_OPEN:
        return RING.verify(url.removeprefix(PUBLIC + "/o/").removesuffix(".gif"), kind)
    return RING.verify(url.removeprefix(PUBLIC + "/c/"), kind)


def test_one_recipient_from_stdin_to_stdout() -> None:
    result = run("--campaign", "C", "--recipient", "R", stdin=HTML.encode())
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert 'href="' + PUBLIC + "/c/" in out and "mailto:x@example.com" in out
    assert "https://shop.example/p" not in out


def test_one_recipient_json_undoes_to_the_input(tmp_path: Path) -> None:
    (tmp_path / "e.html").write_text(HTML)
    (tmp_path / "e.txt").write_text(TEXT)
    result = run("--campaign", "C", "--recipient", "R", "--message-id", "<m@x>", "--sent-at", "1700000000",
                 "--html", str(tmp_path / "e.html"), "--text", str(tmp_path / "e.txt"), "--pixel", "none",
                 "--text-mode", "all", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["error"] is None and out["open_url"].startswith(PUBLIC + "/o/")
    assert token_of(out["open_url"], KIND_OPEN) is not None
    html, text = out["html"], out["text"]
    for link in out["links"]:
        assert token_of(link["click_url"], KIND_CLICK) is not None
        if link["part"] == "html":
            html = html.replace(link["click_url"], link["raw"])
        else:
            text = text.replace(link["click_url"], link["raw"])
    assert html == HTML and text == TEXT
    assert [k["url"] for k in out["links"] if k["part"] == "html"] == ["https://shop.example/p?a=1&b=2"]


def test_both_parts_to_files_and_bytes_of_another_charset_kept(tmp_path: Path) -> None:
    latin1 = '<html><body><p>Caf\xe9</p><a href="https://shop.example/">x</a></body></html>'.encode("latin-1")
    (tmp_path / "e.html").write_bytes(latin1)
    (tmp_path / "e.txt").write_text(TEXT)
    result = run("--campaign", "C", "--recipient", "R", "--html", str(tmp_path / "e.html"), "--text",
                 str(tmp_path / "e.txt"), "--out-html", str(tmp_path / "o.html"), "--out-text",
                 str(tmp_path / "o.txt"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    written = (tmp_path / "o.html").read_bytes()
    assert b"<p>Caf\xe9</p>" in written and (PUBLIC + "/c/").encode() in written
    assert (tmp_path / "o.txt").exists()


def test_batch_writes_one_file_per_recipient(tmp_path: Path) -> None:
    (tmp_path / "e.html").write_text(HTML)
    (tmp_path / "r.csv").write_text("recipient_id,message_id,sent_at\nalice@example.com,<m1@x>,1700000000\n"
                                    "../etc/passwd,,\nbob,<m3@x>,\n")  # fmt: skip
    out_dir = tmp_path / "out"
    result = run("--campaign", "C", "--html", str(tmp_path / "e.html"), "--recipients", str(tmp_path / "r.csv"),
                 "--out-dir", str(out_dir), "--sent-at", "1700000500")  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]
    assert [m["recipient_id"] for m in manifest] == ["alice@example.com", "../etc/passwd", "bob"]
    assert [m["sent_at"] for m in manifest] == [1700000000, 1700000500, 1700000500]
    assert manifest[0]["html_file"] == "alice@example.com.html"
    # An id that is not a safe file name gets a hashed one, inside the directory.
    assert manifest[1]["html_file"].startswith("id-") and "/" not in manifest[1]["html_file"]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(["manifest.jsonl", *(m["html_file"] for m in manifest)])
    clicks = set()
    for m in manifest:
        body = (out_dir / m["html_file"]).read_text()
        (link,) = m["links"]
        assert link["click_url"] in body and m["text_file"] is None
        claims = RING.open(link["click_url"].removeprefix(PUBLIC + "/c/"), KIND_CLICK)
        assert claims is not None and claims.recipient_id == m["recipient_id"] and claims.message_id == m["message_id"]
        assert claims.sent_at == m["sent_at"] and claims.campaign_id == "C"
        clicks.add(link["click_url"])
    assert len(clicks) == 3


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("email\nx\n", "no recipient_id column"),
        ("recipient_id\na\na\n", "line 3: recipient_id 'a' is there twice"),
        ("recipient_id,sent_at\na,yesterday\n", "line 2: sent_at 'yesterday' is not unix seconds"),
        ("recipient_id,sent_at\na,\u00b2\n", "line 2: sent_at '\u00b2' is not unix seconds"),
        ("recipient_id\n" + "é" * 200 + "\n", "line 2: recipient_id"),
        ("recipient_id\n", "no recipients"),
    ],
)
def test_batch_errors_are_one_line_and_write_nothing(tmp_path: Path, csv_text: str, message: str) -> None:
    (tmp_path / "e.html").write_text(HTML)
    (tmp_path / "r.csv").write_text(csv_text)
    out_dir = tmp_path / "out"
    result = run("--campaign", "C", "--html", str(tmp_path / "e.html"), "--recipients", str(tmp_path / "r.csv"),
                 "--out-dir", str(out_dir))  # fmt: skip
    assert result.returncode == 2
    err = result.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("trackd rewrite: ") and message in err, err
    assert not out_dir.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pixel", "top"], "--pixel:"),
        (["--text-mode", "sometimes"], "--text-mode:"),
        (["--html", "/nonexistent/e.html"], "/nonexistent/e.html:"),
        (["--recipients", "r.csv"], "--recipients needs --out-dir"),
        (["--html", "-", "--text", "-"], "cannot both be -"),
    ],
)
def test_single_errors_are_one_line(args: list[str], message: str) -> None:
    base = ["--campaign", "C"] + ([] if "--recipients" in args else ["--recipient", "R"])
    result = run(*base, *args, stdin=HTML.encode())
    assert result.returncode == 2, result.stdout
    err = result.stderr.decode()
    assert err.count("\n") == 1 and message in err, err


def test_a_bad_setting_names_the_variable() -> None:
    result = run("--campaign", "C", "--recipient", "R", env={"TRACKD_REWRITE_MAX_BYTES": "lots"}, stdin=b"x")
    assert result.returncode == 78 and result.stderr.decode().startswith("TRACKD_REWRITE_MAX_BYTES: ")


@pytest.mark.e2e
def test_cli_links_redirect_on_a_real_server(server: ServerProcess) -> None:
    # Signed with the server's keys for the server's own URL, as a sender's batch job would.
    env = {"TRACKD_PUBLIC_URL": server.base_url}
    result = run("--campaign", "cli-e2e", "--recipient", "R", "--json", env=env, stdin=HTML.encode())
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    (link,) = out["links"]
    answer = httpx.get(link["click_url"], follow_redirects=False, timeout=10)
    assert answer.status_code == 302 and answer.headers["location"] == "https://shop.example/p?a=1&b=2"
    pixel = httpx.get(out["open_url"], timeout=10)
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"


def test_over_the_cap_fails_open_with_the_input_untouched(tmp_path: Path) -> None:
    big = HTML + "<!--" + "x" * 2000 + "-->\n"
    result = run("--campaign", "C", "--recipient", "R", env={"TRACKD_REWRITE_MAX_BYTES": "1024"}, stdin=big.encode())
    assert result.returncode == 3
    assert result.stdout == big.encode()
    err = result.stderr.decode()
    assert err.count("\n") == 1 and "untouched" in err and "too_large" in err, err


def test_a_rewrite_cap_over_the_body_cap_is_refused() -> None:
    env = {"TRACKD_REWRITE_MAX_BYTES": "8388608", "TRACKD_API_MAX_BODY_BYTES": "4194304"}
    result = run("--campaign", "C", "--recipient", "R", env=env, stdin=b"x")
    err = result.stderr.decode()
    assert (
        result.returncode == 78 and err.startswith("TRACKD_REWRITE_MAX_BYTES: ") and "TRACKD_API_MAX_BODY_BYTES" in err
    )


def test_a_hashed_file_name_never_lands_on_another_recipients_file() -> None:
    from app.cli import _file_stem

    used: set[str] = set()
    hashed = _file_stem("a/b", set())  # what 'a/b' alone would be called
    first = _file_stem(hashed, used)  # a recipient whose id is literally that name
    second = _file_stem("a/b", used)
    assert first == hashed and second != first and second.casefold() not in {first.casefold()}
