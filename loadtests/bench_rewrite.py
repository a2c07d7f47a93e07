"""Rewrite engine benchmark (issue #15): compile MB/s and renders/s on one core, printed as JSON.

    python -m loadtests.bench_rewrite

The email is generated: about 50 KB of table layout, inline styles, an Outlook conditional
comment with a VML button, and 20 tracked links (plus mailto: and placeholder links that are
skipped). Renders are measured twice: with a trivial signer (the engine's own cost, the issue's
20,000/s target) and with trackd's real signer (AES-SIV tokens, what a sender sees).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from app.rewrite import RewriteOptions, compile_email
from app.rewrite_signer import KeyRingSigner
from trackd_links import KeyRing

BASE = "https://t.example.com"


def generate_email(target_chars: int = 50_000, links: int = 20) -> str:
    """A template-like HTML email of about `target_chars` characters with `links` trackable links."""
    head = (
        '<!DOCTYPE html>\n<html lang="en" xmlns:v="urn:schemas-microsoft-com:vml">\n<head>\n'
        '<meta charset="utf-8"><meta name="viewport" content="width=device-width">\n<title>Spring sale</title>\n'
        "<!--[if mso]><style>table{border-collapse:collapse;} .btn{mso-hide:all;}</style><![endif]-->\n"
        '<style>body{margin:0;padding:0} .x{color:#333}</style>\n</head>\n<body style="margin:0">\n'
    )
    row = (
        '<tr><td class="x" style="padding:12px 24px;font-family:Arial,sans-serif;font-size:15px;line-height:22px;'
        'color:#333333;" align="left" valign="top"><p style="margin:0 0 12px 0">Lorem ipsum dolor sit amet, '
        "consectetur adipiscing elit &amp; sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.</p>"
        "{link}</td></tr>\n"
    )
    vml = (
        '<!--[if mso]><v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="https://shop.example/cta?utm_source='
        'mail&amp;utm_campaign=spring" style="height:40px;width:200px" arcsize="10%" fillcolor="#1a73e8">'
        "<w:anchorlock/><center>Shop</center></v:roundrect><![endif]-->"
    )
    body: list[str] = [head, '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0">\n']
    made = 0
    i = 0
    while sum(map(len, body)) < target_chars - 600:
        if made < links - 1:
            link = (
                f'<a href="https://shop.example/p/{made}?utm_source=mail&amp;utm_medium=email&amp;utm_campaign=spring"'
                f' style="color:#1a73e8;text-decoration:underline">Product {made}</a>'
            )
            made += 1
        elif i % 3 == 0:
            link = '<a href="mailto:help@shop.example">Write to us</a> <a href="{{unsubscribe_url}}">Unsubscribe</a>'
        else:
            link = ""
        body.append(row.format(link=link))
        i += 1
    body.append(f"<tr><td>{vml}</td></tr>\n</table>\n</body>\n</html>\n")
    return "".join(body)


class FakeSigner:
    """The engine's own cost: URLs made by string formatting only."""

    def click_url(self, *, campaign_id: str, recipient_id: str, link_index: int, url: str, link_name: str | None,
                  part: str, sent_at: int | None, message_id: str | None, honeypot: bool) -> str:  # fmt: skip
        return f"{BASE}/c/{recipient_id}-{link_index}"

    def open_url(self, *, campaign_id: str, recipient_id: str, sent_at: int | None, message_id: str | None) -> str:
        return f"{BASE}/o/{recipient_id}.gif"


def _per_second(fn: Any, seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def run(seconds: float = 2.0) -> dict[str, Any]:
    """Every figure, each measured for about `seconds` (BENCH_SECONDS when run as a module)."""
    html = generate_email()
    options = RewriteOptions()
    big = generate_email(2_000_000, 2000)
    compiled = compile_email(html, None, options, own_prefixes=(f"{BASE}/c/",))
    assert compiled.error is None, compiled.error
    # trackd's real tokens, minted by the signer the API and `trackd rewrite` use
    fake, ring = FakeSigner(), KeyRingSigner(KeyRing.from_specs(["k1:bench-secret-bench-secret-bench-secret"]), BASE)
    first = compiled.render(fake, "spring", "r-1")
    counter = iter(range(10**12))

    def compile_rate(doc: str) -> float:
        per_second = _per_second(lambda: compile_email(doc, None, options, max_chars=10**7), seconds)
        return round(per_second * len(doc) / 1e6, 1)

    def render_rate(signer: Any) -> int:
        return round(_per_second(lambda: compiled.render(signer, "spring", f"r{next(counter)}"), seconds))

    out = {
        "python": sys.version.split()[0],
        "email_chars": len(html),
        "tracked_links": len(first.links),
        "compile_mb_per_s_50kb": compile_rate(html),
        "compile_mb_per_s_2mb": compile_rate(big),
        "renders_per_s_fake_signer": render_rate(fake),
        "renders_per_s_real_signer": render_rate(ring),
        # Issue #15's targets: compile at least 10 MB/s, render at least 20,000/s (50 KB, 20 links).
        "targets": {"compile_mb_per_s": 10, "renders_per_s": 20_000},
    }
    out["meets_targets"] = out["compile_mb_per_s_50kb"] >= 10 and out["renders_per_s_fake_signer"] >= 20_000
    return out


if __name__ == "__main__":
    print(json.dumps(run(float(os.environ.get("BENCH_SECONDS", "2"))), indent=2))
