"""CLI: (to be filled by its owner)."""

from __future__ import annotations


def register(sub) -> None:  # noqa: ARG001 - filled in by the owner of this module
    return None
