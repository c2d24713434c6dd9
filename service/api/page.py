"""Routes: the web page at ``/`` and its static assets (shipped in the package, no CDN).

The page is a static HTML/CSS/JS bundle that reads the REST API from the browser, so it shows
exactly what ``/api/v1`` answers and needs no server-side rendering.
"""

from __future__ import annotations

import mimetypes
from functools import lru_cache
from importlib import resources
from pathlib import PurePosixPath

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service import __version__
from service.api.errors import ProblemError

router = APIRouter(include_in_schema=False)

# Only same-origin scripts, styles and API calls: the page works offline and an injected
# string cannot run as script. SVG presentation attributes are not styles, so no
# 'unsafe-inline' is needed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def _security_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


@lru_cache(maxsize=64)
def _asset(relative: str) -> bytes | None:
    """The bytes of one shipped asset, or None. Cached: the bundle is immutable per install."""
    parts = PurePosixPath(relative).parts
    if not parts or any(p in ("..", ".") or p.startswith(".") for p in parts):
        return None
    node = resources.files("service.web") / "static"
    for part in parts:
        node = node / part
    if not node.is_file():
        return None
    return node.read_bytes()


def _media_type(relative: str) -> str:
    suffix = PurePosixPath(relative).suffix.lower()
    return _TYPES.get(suffix) or mimetypes.guess_type(relative)[0] or "application/octet-stream"


@router.get("/")
def index() -> Response:
    body = _asset("index.html")
    if body is None:  # a broken install, not a user error
        raise ProblemError(500, "the web page is missing from this installation; reinstall "
                                "collapsewatch (service/web/static/index.html)")
    # The asset URLs carry the version so a browser never mixes old JS with a new page.
    body = body.replace(b"{{version}}", __version__.encode())
    headers = _security_headers() | {"Cache-Control": "no-cache"}
    return Response(body, media_type=_TYPES[".html"], headers=headers)


@router.get("/static/{path:path}")
def static_asset(path: str, request: Request) -> Response:
    body = _asset(path)
    if body is None or path == "index.html":
        raise ProblemError(404, f"no static asset named '{path}'")
    # Versioned URLs (?v=...) may be cached for long; bare ones are revalidated.
    cache = "public, max-age=86400" if request.query_params.get("v") else "no-cache"
    headers = _security_headers() | {"Cache-Control": cache}
    return Response(body, media_type=_media_type(path), headers=headers)
