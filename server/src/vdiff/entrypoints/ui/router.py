"""HTTP wiring of GET /ui/ and its assets (disabled by --disable-ui)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import RedirectResponse, Response

router = APIRouter(include_in_schema=False)

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def _asset(name: str) -> Response:
    if name not in ASSETS:
        raise HTTPException(status_code=404, detail=f"no UI asset {name!r}")
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    return Response(body, media_type=ASSETS[name], headers=HEADERS)


@router.get("/ui")
async def ui_redirect() -> Response:
    """Relative redirect: the page's relative URLs need the trailing slash, whatever the prefix."""
    return RedirectResponse("ui/", status_code=307)


@router.get("/ui/")
async def ui_page() -> Response:
    return _asset("index.html")


@router.get("/ui/{name}")
async def ui_asset(name: str) -> Response:
    return _asset(name)
