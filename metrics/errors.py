"""Errors raised by the scoring library. All are ``ValueError`` subclasses: bad input."""

from __future__ import annotations


class MetricsError(ValueError):
    """Base class: the input cannot be scored as given."""


class ReferenceTooSmall(MetricsError):
    """Too few documents to build a reference or baseline with a human band."""


class ProfileError(MetricsError):
    """A profile file is corrupt, from an incompatible version, or the wrong profile was passed."""
