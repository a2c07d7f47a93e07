"""`trackd serve` with the writer-side changes proposed in docs/benchmarks.md ("Findings")
applied as in-process patches, so that their gain can be measured before app/ changes:

    BENCH_TRACKD_MODULE=loadtests.whatif_serve make bench

Measurement only; never used to serve. The patches memoise two pure functions of the row
maker: the machine classification of a user agent and the anonymised form of a peer address.
"""

from __future__ import annotations

import functools
import sys

from app import cli, events


def apply_proposed_caches() -> None:
    events.machine_reason = functools.lru_cache(maxsize=4096)(events.machine_reason)  # type: ignore[assignment]
    plain = events.RowMaker.ip_value

    @functools.lru_cache(maxsize=65536)
    def cached(maker: events.RowMaker, peer: str | None, forwarded_for: bytes | None) -> str | None:
        return plain(maker, peer, forwarded_for)

    events.RowMaker.ip_value = cached  # type: ignore[method-assign,assignment]


if __name__ == "__main__":
    apply_proposed_caches()
    sys.exit(cli.main())
