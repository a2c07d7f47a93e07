"""The resources one running app owns, built in the lifespan and handed to the handlers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from app.db import Pool
from app.heartbeat import Heartbeat
from app.journal import Journal
from app.lifecycle import LifecycleTask
from app.metrics import HotPathMeter, Metrics
from app.settings import Settings
from app.verdicts.deferred import DeferredJudge
from app.writer import Writer
from trackd_links.tokens import KeyRing


@dataclass
class Services:
    settings: Settings
    keyring: KeyRing
    metrics: Metrics
    meter: HotPathMeter
    journal: Journal
    pool: Pool | None = None
    writer: Writer | None = None
    heartbeat: Heartbeat | None = None
    heartbeat_task: asyncio.Task[None] | None = None
    lifecycle: LifecycleTask | None = None
    lifecycle_task: asyncio.Task[None] | None = None
    verdicts: DeferredJudge | None = None
    verdicts_task: asyncio.Task[None] | None = None
    schema_ready: bool = False
    shutting_down: bool = False
    api_keys: tuple[bytes, ...] = field(default_factory=tuple)

    @property
    def ready(self) -> bool:
        """Whether this instance should get traffic: set up and not stopping. Not whether its
        journal is full: every pod's journal fills in the same database outage, and one client
        must not be able to take a pod out of the Service (docs/reliability.md). A full journal
        is reported in /readyz's body and by trackd_events_dropped_total{reason="journal_full"}."""
        return self.schema_ready and not self.shutting_down
