"""The FastAPI application: routers, error handlers, body limits."""

from __future__ import annotations

from importlib import import_module

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service import __version__
from service.api import errors
from service.api.limits import BodySizeLimitMiddleware, RequestShapeMiddleware
from service.api.page import CONTENT_SECURITY_POLICY, assets_app
from service.api.security import SecurityHeadersMiddleware, TokenBuckets
from service.domain.schemas import MAX_JSON_DEPTH
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
    "service.api.keys",
)
ROOT_ROUTERS = (
    "service.api.otlp",
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
    # per-key rate limits, in this process's memory (N processes allow N times the rate)
    app.state.rate_buckets = TokenBuckets(settings.rate_limit_per_key, settings.rate_limit_burst)
    # once per process: channel secrets stored in plaintext, or an unusable key
    warn_if_unconfigured("api", settings)
    # inside the body limit: it buffers JSON bodies the limit has already capped
    app.add_middleware(RequestShapeMiddleware, max_depth=MAX_JSON_DEPTH)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:  # no CORS headers at all unless origins are configured
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Retry-After"])
    # added last, so outermost: covers every response, 413s and CORS preflights included
    app.add_middleware(SecurityHeadersMiddleware,
                       content_security_policy=CONTENT_SECURITY_POLICY)
    for name in API_ROUTERS:
        app.include_router(import_module(name).router, prefix="/api/v1")
    for name in ROOT_ROUTERS:
        app.include_router(import_module(name).router)
    # the page's assets: StaticFiles on the shipped folder (see service.api.page)
    app.mount("/static", assets_app(), name="static")
    return app


def create_served_app() -> FastAPI:
    """The app as ``collapsewatch api`` and ``serve`` run it (uvicorn's factory).

    The objects made while starting (modules, routers, settings: ~130,000 of them) live as
    long as the process, so they are moved out of the cyclic garbage collector's view
    (``gc.freeze``, Python docs "gc"): a full collection otherwise walks all of them, and at
    1,000 models the objects a ``/metrics`` snapshot allocates trigger such collections,
    which took an uncached scrape from p95 ~190 ms to ~370 ms (benchmarks/README.md, Fleet).
    """
    import gc

    app = create_app()
    gc.collect()
    gc.freeze()
    return app
