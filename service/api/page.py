"""Routes: the web page at ``/`` and its static assets (shipped in the package, no CDN).

The page is a static HTML/CSS/JS bundle that reads the REST API from the browser, so it shows
exactly what ``/api/v1`` answers and needs no server-side rendering.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

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
HTML = "text/html; charset=utf-8"


def static_dir() -> Path:
    """The shipped asset folder (inside the installed package, never a configurable path)."""
    return Path(str(resources.files("service.web") / "static"))


@lru_cache(maxsize=1)
def _index_template() -> bytes | None:
    path = static_dir() / "index.html"
    return path.read_bytes() if path.is_file() else None


class Assets(StaticFiles):
    """The page's assets. Starlette's StaticFiles resolves every request path inside the folder
    (``realpath`` + ``commonpath``: no ``..``, no absolute path, no symlink out of it);
    nothing here joins a request path onto a folder by hand."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path in ("index.html", "", "."):
            # the page is served at / with its version filled in, never as a raw template
            raise HTTPException(404)
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            # versioned URLs (?v=...) may be cached for long; bare ones are revalidated
            versioned = any(part.startswith(b"v=")
                            for part in scope.get("query_string", b"").split(b"&"))
            response.headers["Cache-Control"] = ("public, max-age=86400" if versioned
                                                 else "no-cache")
        return response


def assets_app() -> Assets:
    return Assets(directory=static_dir(), follow_symlink=False)


@router.get("/")
def index() -> Response:
    body = _index_template()
    if body is None:  # a broken install, not a user error
        raise ProblemError(500, "the web page is missing from this installation; reinstall "
                                "collapsewatch (service/web/static/index.html)")
    # The asset URLs carry the version so a browser never mixes old JS with a new page.
    body = body.replace(b"{{version}}", __version__.encode())
    return Response(body, media_type=HTML, headers={"Cache-Control": "no-cache"})
