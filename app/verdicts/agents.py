"""Placeholder until the user-agent rules land (same interface)."""

from __future__ import annotations

from app.classify import machine_reason


def agent_reasons(kind: str, user_agent: str | None) -> tuple[str, ...]:
    found = machine_reason(kind, False, user_agent)
    return (found,) if found else ()
