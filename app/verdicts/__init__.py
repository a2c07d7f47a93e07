"""Judging machines from people (docs/engagement.md): what the hot path keeps of each request
(evidence), the rules that are certain at once (rules, agents, networks), and the rules that only
later events settle, judged in PostgreSQL where every pod's events meet (deferred)."""
