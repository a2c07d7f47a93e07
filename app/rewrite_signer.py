"""The rewrite engine's Signer (app.rewrite.Signer) on trackd's KeyRing, and the public URL of a
token: the one place that spells `/c/TOKEN` and `/o/TOKEN.gif`, shared by `/v1/tracking-urls`,
`/v1/rewrite`, `trackd sign` and `trackd rewrite`, so that every way in mints the same URLs.

Kept outside app/rewrite/: the engine knows nothing of keys or settings, only this protocol."""

from __future__ import annotations

import time

from app.settings import Settings
from trackd_links.tokens import KeyRing


def click_url(base: str, token: str) -> str:
    return f"{base}/c/{token}"


def open_url(base: str, token: str) -> str:
    return f"{base}/o/{token}.gif"


def own_prefixes(base: str) -> tuple[str, str]:
    """trackd's own link prefixes: the engine leaves links starting with them alone, so that an
    email rewritten twice is not wrapped twice."""
    return f"{base}/c/", f"{base}/o/"


class KeyRingSigner:
    """Mints the click and open URLs of one email's links. Raises what KeyRing raises
    (trackd_links.urls.InvalidURL, trackd_links.tokens.SigningError)."""

    __slots__ = ("_click", "_open", "base", "ring")

    def __init__(self, ring: KeyRing, base: str) -> None:
        self.ring = ring
        self.base = base.rstrip("/")
        # Prefixes joined once: render calls click_url once per link per recipient.
        self._click = f"{self.base}/c/"
        self._open = f"{self.base}/o/"

    @classmethod
    def from_settings(cls, settings: Settings, ring: KeyRing) -> KeyRingSigner:
        return cls(ring, settings.base_url)

    @property
    def own_prefixes(self) -> tuple[str, str]:
        return self._click, self._open

    def click_url(self, *, campaign_id: str, recipient_id: str, link_index: int, url: str, link_name: str | None,
                  part: str, sent_at: int | None, message_id: str | None, honeypot: bool) -> str:  # fmt: skip
        token = self.ring.sign_click(campaign_id, recipient_id, link_index, url, sent_at=sent_at, link_name=link_name,
                                     message_id=message_id, part=part, honeypot=honeypot)  # fmt: skip
        return self._click + token

    def open_url(self, *, campaign_id: str, recipient_id: str, sent_at: int | None, message_id: str | None) -> str:
        token = self.ring.sign_open(campaign_id, recipient_id, sent_at=sent_at, message_id=message_id)
        return f"{self._open}{token}.gif"


def resolve_sent_at(sent_at: int | None) -> int:
    """The send time every token of one message carries. Fixed once per message (not left to each
    signature's own clock): its pixel and links then agree even when rendering crosses a second."""
    return int(time.time()) if sent_at is None else sent_at
