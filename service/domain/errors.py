"""What the domain raises when a caller got something wrong: plain exceptions.

The domain knows nothing of HTTP or the command line. Each entry point maps these once:
``service.api.errors`` to problem+json (404, 409, 422, 413, 401, 403, 429, 503), the CLI to
exit code 2 and one line on stderr. ``extra`` carries structured details (e.g. ``errors``: a
list of ``{"field", "message"}``) that the API renders beside ``detail``.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    """The named thing does not exist (or the caller may not know that it does)."""


class Conflict(DomainError):
    """The request clashes with what is stored (a duplicate name, a state that forbids it)."""


class Invalid(DomainError):
    """The request is well-formed but its content is wrong."""


class TooLarge(DomainError):
    """The request is over a configured size limit."""


class Unauthorized(DomainError):
    """No valid credentials."""


class Forbidden(DomainError):
    """Valid credentials that do not allow this."""


class RateLimited(DomainError):
    """Too many requests; ``retry_after`` seconds until the next one may pass."""

    def __init__(self, detail: str, retry_after: float, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A dependency (database, broker) cannot be reached right now."""
