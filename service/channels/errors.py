"""What channels raise: a config that cannot be used, a send that failed."""

from __future__ import annotations


class ChannelConfigError(ValueError):
    """A channel's configuration is unusable; the message says which field and why."""


class DeliveryError(Exception):
    """Sending failed. ``retryable`` tells the outbox whether another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
