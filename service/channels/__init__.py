"""Notification channels: every module in this package that defines a
:class:`~service.channels.base.NotificationChannel` subclass is a channel kind, so a
new channel is one new file here."""

from __future__ import annotations

import importlib
import pkgutil

from service.channels.base import Message, NotificationChannel
from service.channels.errors import ChannelConfigError, DeliveryError
from service.channels.netguard import DestinationRefused


def _discover() -> dict[str, type[NotificationChannel]]:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("base", "errors", "netguard"):
            importlib.import_module(f"{__name__}.{info.name}")
    found: dict[str, type[NotificationChannel]] = {}
    stack = list(NotificationChannel.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if getattr(cls, "kind", None):
            found[cls.kind] = cls
    return found


CHANNEL_KINDS: dict[str, type[NotificationChannel]] = _discover()


def channel_class(kind: str) -> type[NotificationChannel]:
    try:
        return CHANNEL_KINDS[kind]
    except KeyError:
        raise ChannelConfigError(
            f"unknown channel kind {kind!r}; use one of {', '.join(sorted(CHANNEL_KINDS))}"
        ) from None


def build_channel(kind: str, config: dict, *, timeout: float = 10.0,
                  allowed_hosts: frozenset[str] | None = None) -> NotificationChannel:
    """A ready-to-send channel; ``allowed_hosts`` defaults to
    ``COLLAPSEWATCH_CHANNEL_ALLOWED_HOSTS``."""
    return channel_class(kind)(config, timeout=timeout, allowed_hosts=allowed_hosts)


__all__ = ["CHANNEL_KINDS", "ChannelConfigError", "DeliveryError", "DestinationRefused",
           "Message", "NotificationChannel", "build_channel", "channel_class"]
