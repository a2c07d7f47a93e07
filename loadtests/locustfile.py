"""Locust scenario for trackd: mail clients opening pixels and people clicking links.

    make loadtest      # starts trackd + embedded PostgreSQL, runs this headless, checks the rows

Run by hand against a running trackd (same TRACKD_SIGNING_KEYS as the server, loopback only):
    PYTHONPATH=. TRACKD_SIGNING_KEYS=... .venv/bin/locust -f loadtests/locustfile.py --headless \
        -u 50 -r 25 -t 30s --host http://127.0.0.1:8000

Tokens are signed before the run, in-process, with the service's key ring: the run measures the
tracked routes only. Request names in the statistics are `open`, `click` and `bad`.
"""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, between, task

from loadtests.mix import Mix
from trackd_links.tokens import KeyRing

_KEYS = [k for k in os.environ.get("TRACKD_SIGNING_KEYS", "").split(",") if k]
if not _KEYS:
    raise SystemExit("set TRACKD_SIGNING_KEYS to the keys the server under test uses")
MIX = Mix(KeyRing.from_specs(_KEYS), recipients=int(os.environ.get("LOADTEST_RECIPIENTS", "20000")))
_USER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0",  # Apple Mail Privacy Protection fetching pixels
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
)


class MailReader(FastHttpUser):
    # Think time keeps 50 users near a realistic, steady request rate instead of a closed loop
    # that would only measure locust's own CPU on a 2-core machine.
    wait_time = between(0.005, 0.015)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.headers = {"User-Agent": self.rng.choice(_USER_AGENTS)}

    @task
    def interact(self) -> None:
        req = MIX.pick(self.rng)
        with self.client.get(req.path, name=req.name, headers=self.headers, allow_redirects=False,
                             catch_response=True) as response:  # fmt: skip
            if response.status_code != req.expect_status:
                response.failure(f"status {response.status_code}, expected {req.expect_status}")
            elif req.location is not None and response.headers.get("location") != req.location:
                response.failure(f"Location {response.headers.get('location')!r}, expected {req.location!r}")
            else:
                response.success()
