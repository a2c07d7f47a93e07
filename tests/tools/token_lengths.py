"""Measure token lengths for the README ("Tokens"): version 2 tokens against docs/tokens.md's
formula, and the version 1 token of the same fields.

Run: .venv/bin/python -m tests.tools.token_lengths (from the checkout; no server, no database).
"""

from __future__ import annotations

import math

from tests.support import v1_payload
from trackd_links import KIND_CLICK, KIND_OPEN, KeyRing

KID = "k1"  # 2 characters
CAMPAIGN = "spring-26a"  # 10 bytes
RECIPIENT = "r-0000012345"  # 12 bytes
URL = "https://shop.example.com/sale?id=12"  # 35 characters
SENT_AT = 1767225600


def chars(n_bytes: int) -> int:
    """Unpadded base64url characters for `n_bytes` bytes."""
    return math.ceil(4 * n_bytes / 3)


def main() -> None:
    assert (len(KID), len(CAMPAIGN), len(RECIPIENT), len(URL)) == (2, 10, 12, 35)
    ring = KeyRing.from_specs([f"{KID}:a-long-random-secret-0123456789"])
    ids = len(KID) + len(CAMPAIGN) + len(RECIPIENT)
    rows = [
        ("v2 open", ring.sign_open(CAMPAIGN, RECIPIENT, sent_at=SENT_AT), chars(25 + ids)),
        ("v2 click", ring.sign_click(CAMPAIGN, RECIPIENT, 0, URL, sent_at=SENT_AT), chars(27 + ids + len(URL))),
        (
            "v2 click, link_name 'hero-cta', message_id 'm-0000000001'",
            ring.sign_click(
                CAMPAIGN, RECIPIENT, 0, URL, sent_at=SENT_AT, link_name="hero-cta", message_id="m-0000000001"
            ),
            chars(27 + ids + len(URL) + 1 + 8 + 1 + 12),
        ),
        ("v1 open", ring._seal(v1_payload(ring, KIND_OPEN, CAMPAIGN, RECIPIENT, sent_at=SENT_AT)), None),
        ("v1 click", ring._seal(v1_payload(ring, KIND_CLICK, CAMPAIGN, RECIPIENT, URL, sent_at=SENT_AT)), None),
    ]
    for name, token, formula in rows:
        print(f"{name}: {len(token)} characters" + (f" (formula: {formula})" if formula is not None else ""))


if __name__ == "__main__":
    main()
