"""The real-time verdict: what is certain from the request alone (docs/engagement.md).

An event is a machine's when its method, headers, user agent, address or link say so; each rule
that fires adds its reason code, so `machine_reason` says everything that was seen (`head,
declared_bot`). What only later events show (bursts, address bursts, the rest of a honeypot scan,
a probable vendor network near the send) is judged in PostgreSQL (migration 011,
app.verdicts.deferred) and only ever adds to these.

Never a rule here: "click before open" or "no open" (clients that block images do both), "same
address opened and clicked" (a real Outlook or Thunderbird reader does exactly that), an old
browser version alone (enterprises pin browsers; Android WebView sends full builds), or a
generic bot list on opens (it would erase Gmail, Yahoo and Windows Mail readers).
"""

from __future__ import annotations

from app.verdicts import evidence
from app.verdicts.agents import agent_reasons

# Every reason code and what it means (docs/engagement.md has the sources): `trackd explain`
# prints these.
REASONS: dict[str, str] = {
    "head": "the request was a HEAD: a link checker, never a browser navigating or a mail client loading an image",
    "prefetch": "a Purpose / Sec-Purpose / X-Purpose / X-Moz header said prefetch, prerender or preview",
    "no_user_agent": "no User-Agent at all: no mail client or browser sends none",
    "apple_mpp": (
        "an open with the user agent exactly 'Mozilla/5.0': Apple Mail Privacy Protection"
        " fetching every image on delivery"
    ),
    "minimal_user_agent": "a click with the user agent exactly 'Mozilla/5.0': no browser navigates with that",
    "gmail_prefetch": "Gmail's prefetch user agent (... Edge/12.246 Mozilla/5.0) or its content sampling",
    "office_discovery": "Microsoft Office probing a link before opening it (Existence / Protocol Discovery)",
    "link_preview": "a link preview (Slack, Teams, WhatsApp, iMessage, ...): someone forwarded or pasted the link",
    "declared_bot": "a crawler or automation that names itself (Googlebot, HeadlessChrome, ...)",
    "http_library": "an HTTP library or command-line tool (curl, python-requests, Go-http-client, ...)",
    "scanner_user_agent": "a mail security product that names itself (Barracuda Sentinel)",
    "scanner_network": (
        "the address is in a certain network list entry for this kind (mail filtering"
        " tier: Microsoft EOP, Barracuda EGD)"
    ),
    "honeypot": "the click was on the honeypot link, which no person sees",
    "burst": (
        "two or more clicks of this recipient within the burst window (TRACKD_BURST_SECONDS): a"
        " scanner opening every link"
    ),
    "address_burst": (
        "this link (or this message's pixel) was fetched from three or more addresses within TRACKD_ADDRESS_WINDOW_S"
    ),
    "honeypot_scan": (
        "part of the scan that hit the honeypot link: the same address within"
        " TRACKD_SCAN_WINDOW_S, or any address within the burst window"
    ),
    "scan": (
        "from the same address as a burst of this recipient, within TRACKD_SCAN_WINDOW_S of it (the"
        " scanner's pixel fetch)"
    ),
    "probable_network": (
        "a probable network list entry (a vendor whose isolation can carry a person)"
        " within TRACKD_PROBABLE_WINDOW_S of the send"
    ),
    # Written by versions before the engagement rules (still found in old rows).
    "security_scanner": "(older versions) a security scanner's user agent",
    "apple_privacy_proxy": "(older versions) Apple Mail Privacy Protection",
    "bot": "(older versions) a bot's user agent",
    "machine": "(no reason recorded)",
}

# Real-time reason codes, in the order they are written.
HEAD = "head"
PREFETCH = "prefetch"
SCANNER_NETWORK = "scanner_network"
HONEYPOT = "honeypot"
# Deferred reason codes (migration 011).
DEFERRED = ("burst", "address_burst", "honeypot_scan", "scan", "probable_network")


def reasons(kind: str, bits: int, user_agent: str | None) -> tuple[str, ...]:
    """Every real-time reason this request is a machine's; () for a person."""
    out: list[str] = []
    if bits & evidence.HEAD:
        out.append(HEAD)
    if bits & evidence.PREFETCH:
        out.append(PREFETCH)
    out += agent_reasons(kind, user_agent)
    if bits & evidence.NETWORK_CERTAIN:
        out.append(SCANNER_NETWORK)
    if bits & evidence.HONEYPOT:
        out.append(HONEYPOT)
    return tuple(out)


def machine_reason(kind: str, bits: int, user_agent: str | None) -> str | None:
    """`events.machine_reason` for a request: its codes, comma separated, or None for a person."""
    found = reasons(kind, bits, user_agent)
    return ",".join(found) if found else None
