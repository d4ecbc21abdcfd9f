"""The web dashboard: the page at `/` and its static assets under `/ui/` (api/dashboard/, package data).

The page and its assets hold no data, so they are served without a token (and kept out of the OpenAPI
schema); every piece of data the page shows comes from the API's own endpoints, called by the page with
`Authorization: Bearer <token>` when the user gave one. Everything ships with the package (no CDN, nothing
fetched at run time): a Content-Security-Policy of 'self' makes the browser refuse anything else, so the
page works offline and an injected string cannot load or run foreign code.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

ASSETS = Path(__file__).resolve().parent.parent / "dashboard"
# The assets the page loads, by name: a fixed list, so no request path can name any other file.
MEDIA_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "yaml.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# "no-cache" = revalidate each time (FileResponse sends an ETag and Last-Modified, so an unchanged asset is a
# 304 with no body): a new version of the package is seen on the next load, without a stale-cache window.
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/")
def index() -> FileResponse:
    """The dashboard page (its views are chosen by the URL fragment: #/sweeps, #/sweeps/1, #/submit, ...)."""
    return FileResponse(ASSETS / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/ui/{name}")
def asset(name: str) -> FileResponse:
    """A script or style sheet of the page."""
    media_type = MEDIA_TYPES.get(name)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no dashboard asset {name[:100]!r}")
    return FileResponse(ASSETS / name, media_type=media_type, headers=HEADERS)
