"""Which interactions were made by machines rather than people, and why.

Marked, never dropped: analysts filter on `is_machine`. Only signals that are specific enough to
be right are used; a generic HTTP library's user agent is not evidence of a scanner by itself.
"""

from __future__ import annotations

import re

# Security gateways that open every link in a message before the recipient sees it.
_SCANNER = re.compile(
    r"barracuda|mimecast|proofpoint|ppops|forcepoint|symantec|messagelabs|trend ?micro|"
    r"fortiguard|sophos|cisco ?ironport|safelinks|microsoft office/.*\(ms-office|"
    r"bitdefender|checkpoint|zscaler|urldefense|avanan|abnormal",
    re.IGNORECASE,
)
_BOT = re.compile(r"bot\b|bot/|crawler|spider|slurp|preview|headless|phantomjs|scanner", re.IGNORECASE)
# Apple Mail Privacy Protection fetches every pixel through Apple's proxy with this bare UA.
_APPLE_MPP = "Mozilla/5.0"
# Google's image proxy fetches pixels on behalf of Gmail users: a real open, but not a person's
# browser; we keep it human (it is the recipient opening the mail).


def machine_reason(kind: str, is_head: bool, user_agent: str | None) -> str | None:
    """The reason an interaction is a machine's, or None for a person's."""
    if is_head:
        return "head"
    if not user_agent:
        return "no_user_agent"
    if _SCANNER.search(user_agent):
        return "security_scanner"
    if kind == "open" and user_agent == _APPLE_MPP:
        return "apple_privacy_proxy"
    if _BOT.search(user_agent):
        return "bot"
    return None
