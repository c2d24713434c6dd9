"""Notification channels: every module in this package that defines a
:class:`~service.channels.base.NotificationChannel` subclass is a channel kind, so a
new channel is one new file here."""

from __future__ import annotations

import importlib
import pkgutil

from service.channels.base import (
    ChannelConfigError,
    DeliveryError,
    Message,
    NotificationChannel,
)


def _discover() -> dict[str, type[NotificationChannel]]:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
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


def build_channel(kind: str, config: dict, *, timeout: float = 10.0) -> NotificationChannel:
    return channel_class(kind)(config, timeout=timeout)


__all__ = ["CHANNEL_KINDS", "ChannelConfigError", "DeliveryError", "Message",
           "NotificationChannel", "build_channel", "channel_class"]
