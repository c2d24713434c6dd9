"""RFC 9457 problem details for every error; never a stack trace."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.domain import errors as domain
from service.logging import get_logger

log = get_logger("collapsewatch.api")

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class BodyTooLarge(Exception):
    """Raised while reading a request body past the configured limit (413)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        super().__init__(f"request body exceeds the limit of {max_bytes} bytes "
                         "(COLLAPSEWATCH_MAX_BODY_BYTES); send smaller batches")


class ProblemError(Exception):
    """Raise from anywhere in a request to answer with problem+json."""

    def __init__(self, status: int, detail: str, *, title: str | None = None,
                 type_: str = "about:blank", **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.type = type_
        self.extra = extra


def problem_response(status: int, detail: str, *, title: str | None = None,
                     instance: str | None = None, headers: dict[str, str] | None = None,
                     type_: str = "about:blank", **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_,
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def not_utf8_detail(exc: UnicodeDecodeError) -> str:
    return f"request body is not valid UTF-8 (byte {exc.start}); send JSON encoded as UTF-8"


def _field(loc: tuple | list) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _describe(err: dict[str, Any]) -> dict[str, str]:
    """One validation error as {"field", "message"}, in words a client can act on."""
    loc = err.get("loc", ())
    message = str(err.get("msg", ""))
    if err.get("type") == "json_invalid":
        # FastAPI puts the character offset where the field name would be
        reason = (err.get("ctx") or {}).get("error") or message
        where = next((p for p in loc if isinstance(p, int)), None)
        at = f" at character {where}" if where is not None else ""
        return {"field": "body", "message": f"malformed JSON{at}: {reason}"}
    # pydantic prefixes messages of custom validators with "Value error, "
    message = message.removeprefix("Value error, ")
    return {"field": _field(loc), "message": message}


# each domain error maps to one status, here and nowhere else
DOMAIN_STATUS: dict[type[domain.DomainError], int] = {
    domain.NotFound: 404,
    domain.Conflict: 409,
    domain.Invalid: 422,
    domain.TooLarge: 413,
    domain.Unauthorized: 401,
    domain.Forbidden: 403,
    domain.RateLimited: 429,
    domain.Unavailable: 503,
}


def status_of(exc: domain.DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in DOMAIN_STATUS:
            return DOMAIN_STATUS[cls]
    return 400


def as_problem(exc: domain.DomainError) -> ProblemError:
    """The problem+json answer for a domain error."""
    extra = dict(exc.extra)
    if isinstance(exc, domain.RateLimited):
        extra["headers"] = {"Retry-After": str(max(1, round(exc.retry_after)))}
    return ProblemError(status_of(exc), exc.detail, **extra)


def install(app: FastAPI) -> None:
    @app.exception_handler(domain.DomainError)
    async def _domain(request: Request, exc: domain.DomainError):
        return await _problem(request, as_problem(exc))

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError):
        extra = dict(exc.extra)
        if exc.status == 401:
            # RFC 9110 §15.5.2: a 401 carries the challenge
            extra["headers"] = {"WWW-Authenticate": "Bearer", **(extra.get("headers") or {})}
        return problem_response(exc.status, exc.detail, title=exc.title, type_=exc.type,
                                instance=request.url.path, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if isinstance(exc.__cause__, BodyTooLarge):
            # FastAPI turns any error while reading the body into a 400
            return problem_response(413, str(exc.__cause__), instance=request.url.path)
        if isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI's JSON body parsing answers "There was an error parsing the body"
            detail = not_utf8_detail(exc.__cause__)
        return problem_response(exc.status_code, detail, instance=request.url.path,
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        raw = exc.errors()
        errors = [_describe(err) for err in raw]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        detail = f"{first['field']}: {first['message']}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
        if raw and all((err.get("loc") or ("",))[0] == "path" for err in raw):
            # a path that does not parse (an id out of range, not a number) names nothing
            return problem_response(404, f"no such resource ({detail})",
                                    instance=request.url.path)
        return problem_response(422, detail, instance=request.url.path, errors=errors[:50])

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception):
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem_response(500, "internal error; see the service log",
                                instance=request.url.path)
