"""Verdicts: which opens and clicks were made by machines rather than people, and why.

The package judges machines from people, one kind of evidence per module: `evidence.py` (what a
request carried), `rules.py` (how evidence becomes reason codes), `networks.py` (published scanner
and proxy ranges), `agents.py` (what the User-Agent alone proves), and the deferred rules that need
later events (bursts, distinct addresses) in SQL. Events are marked, never dropped, and a verdict can
be judged again when the rules change.
"""
