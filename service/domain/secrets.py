"""Channel secrets at rest: PagerDuty routing keys, webhook HMAC secrets, Slack webhook URLs.

With ``COLLAPSEWATCH_SECRET_KEY`` set (a Fernet key: ``python -c "from
cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``), every secret
field of a channel config (``secret_fields`` of its channel class) is stored as
``enc:v1:<Fernet token>`` — AES-128-CBC + HMAC-SHA256 with a timestamp
(https://github.com/fernet/spec/blob/master/Spec.md). A value without the prefix is a
plaintext row from before the key was set and still reads; ``collapsewatch secrets rotate``
encrypts those too. During a rotation ``COLLAPSEWATCH_SECRET_KEY_OLD`` (comma-separated)
still decrypts, so workers keep delivering while rows are re-encrypted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.channels import ChannelConfigError, channel_class
from service.domain.errors import Unavailable
from service.domain.tables import Channel
from service.logging import get_logger
from service.settings import Settings, get_settings

log = get_logger("collapsewatch.secrets")

PREFIX = "enc:v1:"

_warned = False


class SecretKeyError(Unavailable):
    """A key is malformed, missing for an encrypted row, or does not decrypt it."""


def _parse(value: SecretStr | str | None, name: str) -> list[Fernet]:
    if value is None:
        return []
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    keys = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            keys.append(Fernet(part.encode("ascii")))
        except (ValueError, UnicodeError):
            raise SecretKeyError(
                f"{name} is not a Fernet key (32 url-safe base64-encoded bytes); generate one "
                "with: python -c \"from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())\"") from None
    return keys


@dataclass(frozen=True)
class Keyring:
    """The key that encrypts (None: store plaintext) and every key that may decrypt."""

    current: Fernet | None
    readers: tuple[Fernet, ...]

    @classmethod
    def from_settings(cls, settings: Settings | None = None,
                      old_keys: str | None = None) -> Keyring:
        s = settings or get_settings()
        current = _parse(s.secret_key, "COLLAPSEWATCH_SECRET_KEY")
        old = _parse(old_keys if old_keys is not None else s.secret_key_old,
                     "COLLAPSEWATCH_SECRET_KEY_OLD")
        return cls(current[0] if current else None, tuple(current[:1] + old))

    def encrypt(self, plaintext: str) -> str:
        if self.current is None:
            return plaintext
        return PREFIX + self.current.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str, where: str) -> str:
        if not is_encrypted(stored):
            return stored
        if not self.readers:
            raise SecretKeyError(
                f"{where} is encrypted but COLLAPSEWATCH_SECRET_KEY is not set; set the key "
                "it was stored with")
        try:
            return MultiFernet(list(self.readers)).decrypt(
                stored[len(PREFIX):].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretKeyError(
                f"{where} cannot be decrypted with COLLAPSEWATCH_SECRET_KEY (nor "
                "COLLAPSEWATCH_SECRET_KEY_OLD): the key is not the one it was stored with; "
                "set the right key, or the old one as COLLAPSEWATCH_SECRET_KEY_OLD") from None


def is_encrypted(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def _secret_fields(kind: str) -> tuple[str, ...]:
    try:
        return channel_class(kind).secret_fields
    except ChannelConfigError:
        return ()


def seal_config(kind: str, config: dict[str, Any], keyring: Keyring | None = None
                ) -> dict[str, Any]:
    """``config`` as it is stored: secret fields encrypted when a key is set."""
    ring = keyring or Keyring.from_settings()
    out = dict(config)
    for key in _secret_fields(kind):
        value = out.get(key)
        if isinstance(value, str) and value and not is_encrypted(value):
            out[key] = ring.encrypt(value)
    return out


def open_config(kind: str, config: dict[str, Any], *, channel_name: str = "?",
                keyring: Keyring | None = None) -> dict[str, Any]:
    """A stored config with its secret fields decrypted (for sending)."""
    ring = keyring or Keyring.from_settings()
    out = dict(config)
    for key in _secret_fields(kind):
        value = out.get(key)
        if is_encrypted(value):
            out[key] = ring.decrypt(value, f"channel {channel_name!r} config.{key}")
    return out


@dataclass(frozen=True)
class Rotation:
    channels: int  # channels whose stored config changed
    fields: int  # secret fields written (re-encrypted, or encrypted for the first time)


def rotate(session: Session, keyring: Keyring) -> Rotation:
    """Re-encrypt every channel secret with the current key (plaintext rows included).

    All or nothing: every row is decrypted before any is written, so a wrong key changes no
    row and names the first one it cannot read."""
    if keyring.current is None:
        raise SecretKeyError("COLLAPSEWATCH_SECRET_KEY is not set: it is the key secrets are "
                             "re-encrypted with")
    channels = list(session.scalars(select(Channel).order_by(Channel.id)).all())
    plain = [(c, open_config(c.kind, c.config or {}, channel_name=c.name, keyring=keyring))
             for c in channels]
    changed = fields = 0
    for channel, config in plain:
        secret_keys = [k for k in _secret_fields(channel.kind)
                       if isinstance(config.get(k), str) and config[k]]
        if not secret_keys:
            continue
        stored = dict(config)
        for key in secret_keys:
            stored[key] = keyring.encrypt(config[key])
        channel.config = stored  # a new dict: the JSON column sees the change
        changed += 1
        fields += len(secret_keys)
    session.flush()
    return Rotation(changed, fields)


def warn_if_unconfigured(process: str, settings: Settings | None = None) -> None:
    """Once per process: say that channel secrets are stored in plaintext, or that the key
    is unusable (without stopping the process: a restart would not fix a setting)."""
    global _warned
    if _warned:
        return
    _warned = True
    try:
        ring = Keyring.from_settings(settings)
    except SecretKeyError as exc:
        log.error("channel secrets cannot be encrypted or read", extra={
            "component": process, "error": str(exc)})
        return
    if ring.current is None:
        log.warning("COLLAPSEWATCH_SECRET_KEY is not set: channel secrets (routing keys, "
                    "webhook secrets, Slack webhook URLs) are stored in plaintext",
                    extra={"component": process})


__all__ = ["PREFIX", "Keyring", "Rotation", "SecretKeyError", "is_encrypted", "open_config",
           "rotate", "seal_config", "warn_if_unconfigured"]
