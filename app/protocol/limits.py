"""The per-process limits of app.protocol and the connection bookkeeping they need, read once
from Settings in each server process (uvicorn builds one protocol object per connection)."""

from __future__ import annotations

import asyncio
import functools
import resource
from typing import TYPE_CHECKING

from app.settings import Settings

if TYPE_CHECKING:
    from app.protocol.guarded import GuardedProtocol

# File descriptors kept free below RLIMIT_NOFILE (journal, database pool, logs, the listener).
FD_RESERVE = 64


class ProcessLimits:
    """What one client may cost (docs/reliability.md), and this process's open connections."""

    def __init__(self, settings: Settings) -> None:
        self.target = settings.max_request_target_bytes
        self.headers = settings.max_header_bytes
        # A coarse, linear guard on a whole head still arriving (request line + headers).
        self.head = settings.max_request_target_bytes + settings.max_header_bytes + 1024
        self.header_timeout = settings.header_timeout_s
        self.pipelined = settings.max_pipelined_requests
        self.write_buffer = settings.max_write_buffer_bytes
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        cap = settings.max_connections
        if soft != resource.RLIM_INFINITY:
            cap = max(1, min(cap, soft - FD_RESERVE))
        self.connections = cap
        # Connections open in this process, whether the cap was reached (logged once until the
        # count drops below it), and the timer of the sweep that enforces the head and idle
        # timeouts (guarded.GuardedProtocol).
        self.open: set[GuardedProtocol] = set()
        self.at_cap = False
        self.sweeping: asyncio.TimerHandle | None = None
        self.sweep_loop: asyncio.AbstractEventLoop | None = None


@functools.cache
def process_limits() -> ProcessLimits:
    return ProcessLimits(Settings())
