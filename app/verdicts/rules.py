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
