"""The traffic mix of the locust scenario, kept free of locust so that tests can import it:
~70 % opens, 25 % clicks, 5 % bad tokens; campaigns Zipf-distributed, many distinct recipients;
every token signed ahead of time, in-process, with the service's own key ring."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from trackd_links.tokens import KeyRing

OPEN_SHARE = 0.70
CLICK_SHARE = 0.25
BAD_SHARE = 0.05
# Requests named in locust's statistics; only `open` and `click` are recorded by trackd.
RECORDED_NAMES = ("open", "click")


def zipf_cum_weights(n: int, s: float = 1.1) -> list[float]:
    """Cumulative weights of ranks 1..n with P(k) proportional to 1/k^s (for random.choices)."""
    return list(itertools.accumulate(1.0 / k**s for k in range(1, n + 1)))


@dataclass(frozen=True)
class Request:
    name: str  # "open", "click" or "bad"
    path: str
    expect_status: int
    campaign: str = ""
    location: str | None = None  # the Location a click must answer with


def tamper(token: str, rng: random.Random) -> str:
    """The same token with one character of its tag changed: must not verify."""
    at = len(token) - 1 - rng.randrange(1, 16)
    swap = "A" if token[at] != "A" else "B"
    return token[:at] + swap + token[at + 1 :]


class Mix:
    def __init__(self, ring: KeyRing, *, campaigns: int = 200, recipients: int = 20_000, links_per_mail: int = 3,
                 seed: int = 42) -> None:  # fmt: skip
        rng = random.Random(seed)
        cum = zipf_cum_weights(campaigns)
        self.opens: list[Request] = []
        self.clicks: list[Request] = []
        self.bad: list[Request] = []
        foreign = KeyRing.from_specs(["zz:not-the-service-secret-012345"])
        for r in range(recipients):
            campaign = f"campaign-{rng.choices(range(campaigns), cum_weights=cum)[0]:03d}"
            recipient = f"user-{r:06d}@mail.example"
            self.opens.append(Request("open", f"/o/{ring.sign_open(campaign, recipient)}.gif", 200, campaign))
            index = rng.randrange(links_per_mail)
            url = f"https://shop.example.com/{campaign}/p/{index}?utm_source=email&utm_medium=mail&rid={r}"
            click = ring.sign_click(campaign, recipient, index, url)
            self.clicks.append(Request("click", f"/c/{click}", 302, campaign, url))
            if r % 10 == 0:  # bad ones: tampered, signed with a key the service does not have, garbage
                self.bad.append(Request("bad", f"/c/{tamper(click, rng)}", 404))
                self.bad.append(Request("bad", f"/o/{tamper(self.opens[-1].path[3:-4], rng)}.gif", 200))
                self.bad.append(Request("bad", f"/c/{foreign.sign_click(campaign, recipient, index, url)}", 404))
                self.bad.append(Request("bad", "/o/not-a-token-at-all-but-long-enough.gif", 200))
        self._bounds = (OPEN_SHARE, OPEN_SHARE + CLICK_SHARE)

    def pick(self, rng: random.Random) -> Request:
        x = rng.random()
        pool = self.opens if x < self._bounds[0] else self.clicks if x < self._bounds[1] else self.bad
        return pool[rng.randrange(len(pool))]
