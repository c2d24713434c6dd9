"""Where a channel may send, and how long and how much one send may take.

A channel URL is chosen by an admin but called by the worker, from inside the deployment: left
unchecked it reaches the cloud metadata service (169.254.169.254), the database, or any other
internal port (server-side request forgery). So every address a channel host resolves to must
be public: loopback, private (RFC 1918, RFC 4193), link-local (169.254/16, fe80::/10),
multicast, unspecified, reserved and other non-global ranges (the IANA special-purpose
registries, RFC 6890, as Python's ``ipaddress`` encodes them) are refused, unless the host is
named in ``COLLAPSEWATCH_CHANNEL_ALLOWED_HOSTS``. The check runs when a channel is created and
again at every send, because DNS answers can change in between (DNS rebinding); the send then
connects to the address it checked, not to a second lookup.

One send has one deadline for everything (lookup, connect, TLS, request, reply), and reads at
most :data:`MAX_REPLY_BYTES` of the reply: a receiver that drips bytes or streams forever
cannot hold a worker thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from service.channels.errors import ChannelConfigError

MAX_REPLY_BYTES = 64 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REFUSED_CLASSES = ("unspecified", "loopback", "link-local", "multicast", "reserved", "private",
                   "non-public")

_T = TypeVar("_T")


class DestinationRefused(ChannelConfigError):
    """A channel URL resolves to an address a channel may not call."""

    def __init__(self, message: str, *, host: str, address: str, address_class: str) -> None:
        super().__init__(message)
        self.host = host
        self.address = address
        self.address_class = address_class


class DeadlineExceeded(Exception):
    """The send did not complete within its one total deadline."""


def address_class(ip: IPAddress) -> str | None:
    """The refused class ``ip`` belongs to, or None when it is a public address.

    Order matters: 169.254/16 is also "private" to ``ipaddress`` and 240/4 both "reserved"
    and "private"; the more specific name is the one an operator recognises.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        # e.g. 100.64/10 (carrier-grade NAT), 192.0.0/24, documentation ranges
        return "non-public"
    return None


def parse_allowed_hosts(value: str | Iterable[str] | None) -> frozenset[str]:
    """``"a.example, 127.0.0.1,[::1]"`` → ``{"a.example", "127.0.0.1", "::1"}`` (lower case)."""
    if value is None:
        return frozenset()
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(h.strip().strip("[]").lower() for h in items if h.strip())


def url_host(url: str) -> str:
    host = urlsplit(url).hostname
    if not host:
        raise ChannelConfigError(f"URL {url!r} has no host")
    return host.lower()


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _unique(addresses: Iterable[str]) -> list[IPAddress]:
    out: list[IPAddress] = []
    for a in addresses:
        ip = ipaddress.ip_address(a.split("%", 1)[0])  # drop an IPv6 zone id
        if ip not in out:
            out.append(ip)
    return out


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (a literal is its own answer). Raises OSError."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return _unique(info[4][0] for info in infos)


def refuse_if_internal(host: str, addresses: list[IPAddress], field: str) -> None:
    """Raise :class:`DestinationRefused` if any address of ``host`` is not public: an attacker
    who controls DNS could otherwise answer one public and one internal address."""
    for ip in addresses:
        cls = address_class(ip)
        if cls is None:
            continue
        where = f"{ip}" if _literal(host) is not None else f"host {host!r} resolves to {ip},"
        raise DestinationRefused(
            f"config.{field}: {where} a {cls} address; channels may not call loopback, "
            "private, link-local, multicast, unspecified or reserved addresses (add the host "
            "to COLLAPSEWATCH_CHANNEL_ALLOWED_HOSTS if it is a trusted internal receiver)",
            host=host, address=str(ip), address_class=cls)


def check_url(url: str, allowed_hosts: frozenset[str], *, field: str = "url") -> None:
    """The creation-time check. A name that does not resolve now is let through: DNS may be
    down or split-horizon here, and every send resolves and checks again."""
    host = url_host(url)
    if host in allowed_hosts:
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError):
        return
    refuse_if_internal(host, addresses, field)


@dataclass(frozen=True)
class Reply:
    """A channel's answer, with at most ``MAX_REPLY_BYTES`` of its body."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    truncated: bool

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


async def _post(url: str, body: bytes, headers: dict[str, str], *, field: str,
                allowed_hosts: frozenset[str], max_reply_bytes: int) -> Reply:
    target = httpx.URL(url)
    host = target.host.lower()
    extensions: dict[str, Any] = {}
    send_headers = dict(headers)
    if host not in allowed_hosts:
        port = target.port or (443 if target.scheme == "https" else 80)
        literal = _literal(host)
        if literal is not None:
            addresses = [literal]
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                                  type=socket.SOCK_STREAM)
            addresses = _unique(info[4][0] for info in infos)
        refuse_if_internal(host, addresses, field)
        # connect to the address just checked, not to whatever a second lookup returns;
        # Host and TLS SNI (and so certificate verification) still name the original host
        send_headers["Host"] = target.netloc.decode("ascii")
        if target.scheme == "https":
            extensions["sni_hostname"] = host
        target = target.copy_with(host=str(addresses[0]))
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                 timeout=None) as client:
        request = client.build_request("POST", target, content=body, headers=send_headers,
                                       extensions=extensions)
        response = await client.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            truncated = False
            async for chunk in response.aiter_raw():
                chunks.append(chunk)
                size += len(chunk)
                if size >= max_reply_bytes:
                    truncated = size > max_reply_bytes
                    break
            content = b"".join(chunks)[:max_reply_bytes]
        finally:
            await response.aclose()
    return Reply(response.status_code, response.headers, content, truncated)


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to completion from synchronous code, even under a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="collapsewatch-send") as pool:
        return pool.submit(asyncio.run, coro).result()


def guarded_post(url: str, body: bytes, headers: dict[str, str], *, timeout: float,
                 allowed_hosts: frozenset[str], field: str = "url",
                 max_reply_bytes: int = MAX_REPLY_BYTES) -> Reply:
    """POST ``body`` to ``url`` under the rules above.

    Raises :class:`DestinationRefused` (an internal address), :class:`DeadlineExceeded`
    (``timeout`` seconds passed, whatever the far end was doing), ``OSError`` (DNS) or
    ``httpx.HTTPError`` (connection, protocol)."""

    async def bounded() -> Reply:
        try:
            async with asyncio.timeout(timeout):
                return await _post(url, body, headers, field=field,
                                   allowed_hosts=allowed_hosts,
                                   max_reply_bytes=max_reply_bytes)
        except TimeoutError:
            raise DeadlineExceeded(f"no complete answer within {timeout:g} s") from None

    return _run(bounded())


__all__ = ["MAX_REPLY_BYTES", "REFUSED_CLASSES", "DeadlineExceeded", "DestinationRefused",
           "Reply", "address_class", "check_url", "guarded_post", "parse_allowed_hosts",
           "refuse_if_internal", "resolve"]
