"""The hot path below ASGI: tracked requests answered from uvicorn's HTTP parser callbacks.

Through ASGI, every request costs uvicorn a `RequestResponseCycle`, an `asyncio.Event`, a task,
and two messages through `send()` that are checked header by header; for the two routes that
make up nearly all of trackd's traffic that machinery cost more than trackd's own work (side by
side on this machine: ~31 against ~19 CPU µs per click, docs/benchmarks.md). So `trackd serve`
runs uvicorn's own `HttpToolsProtocol` with two layers on top, one module each:

- `guarded`: what one client may cost (docs/reliability.md, "Hostile clients"): the request
  target and header sizes (accumulated linearly), the time a request head may take, idle
  keep-alive, the requests and response bytes queued per connection, the open connections per
  process. Settings are read once per process (`limits`).
- `tracking`: when a request's headers are complete and it is a `GET` or `HEAD` of `/c/{token}`
  or `/o/{token}.gif`, `HotPath.answer` (the call the ASGI path makes) decides and records, and
  once the event-loop tick's journal write has returned the response bytes (`wire`) are written
  here: the same status, headers and body the ASGI path sends. No response leaves before its
  event is written. Everything else goes through uvicorn untouched, to the ASGI app.
"""

from app.protocol.tracking import TrackingProtocol

__all__ = ["TrackingProtocol"]
