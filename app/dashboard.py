"""`GET /dashboard`: the live page, and the assets it needs, all served by trackd itself (no CDN
at run time: the chart library, uPlot, is vendored under app/static/vendor)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(str(resources.files("app") / "static"))
# The page holds no data and no secret (the key is asked for in the page, kept in the tab), but it
# must not be framed by another site or load anything from elsewhere.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_PAGE = (STATIC / "dashboard.html").read_bytes()

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
async def dashboard() -> HTMLResponse:
    return HTMLResponse(_PAGE, headers=_HEADERS)


def assets() -> StaticFiles:
    return StaticFiles(directory=STATIC)
