"""The FastAPI application: routers, error handlers, body limits."""

from __future__ import annotations

from importlib import import_module

from fastapi import FastAPI

from service import __version__
from service.api import errors
from service.api.limits import BodySizeLimitMiddleware
from service.domain.secrets import warn_if_unconfigured
from service.settings import get_settings

# Each module exposes ``router`` (an APIRouter). Routers under /api/v1 carry their own
# prefix-free paths; ``ROOT_ROUTERS`` are mounted at the root (/metrics, /healthz, /).
API_ROUTERS = (
    "service.api.references",
    "service.api.monitored_models",
    "service.api.samples",
    "service.api.evaluations",
    "service.api.baselines",
    "service.api.alerts",
)
ROOT_ROUTERS = (
    "service.api.health",
    "service.api.scrape",
    "service.api.page",
)


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(
        title="collapsewatch",
        version=__version__,
        description="Watch deployed generative models for model collapse.",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    errors.install(app)
    # once per process: channel secrets stored in plaintext, or an unusable key
    warn_if_unconfigured("api", settings)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    for name in API_ROUTERS:
        app.include_router(import_module(name).router, prefix="/api/v1")
    for name in ROOT_ROUTERS:
        app.include_router(import_module(name).router)
    return app
