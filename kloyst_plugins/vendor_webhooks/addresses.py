"""Where an endpoint may point: no server-side request forgery through a vendor's webhook URL.

A vendor chooses the URL and Kloyst's workers call it, from inside Kloyst's network. So a URL
must not reach what only Kloyst can reach: its database, Redis, a cloud metadata service
(169.254.169.254), the host itself. The rule is checked twice:

* **at registration** (:func:`check_url`): https only (http where ``vendor_webhooks.allow_http``),
  no user or password in the URL, and every address the host resolves to must be public;
* **at every new connection** (:mod:`.client`): the host is resolved again, every address
  checked, and the socket connects to the address that was checked. A name that resolved to a
  public address at registration and to 10.0.0.5 now (DNS rebinding) is refused then.

Public means globally routable: private (RFC 1918, fc00::/7), loopback, link-local,
multicast, reserved, unspecified, shared (100.64/10) and documentation ranges are refused,
and an IPv4 address mapped or embedded in IPv6 is judged as the IPv4 address.
``vendor_webhooks.allow_loopback`` (the embedded default's development.ini turns it on, for a
receiver on the same machine) lets loopback through and nothing else.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

MAX_URL_LENGTH = 2048


class UnsafeUrl(ValueError):
    """The URL may not be called; the message says why and what to fix."""


@dataclass(frozen=True)
class AddressPolicy:
    allow_http: bool = False
    allow_loopback: bool = False

    @classmethod
    def from_settings(cls, settings) -> AddressPolicy:
        return cls(allow_http=bool(settings["vendor_webhooks.allow_http"]),
                   allow_loopback=bool(settings["vendor_webhooks.allow_loopback"]))


def refusal(address: str, policy: AddressPolicy) -> str | None:
    """Why ``address`` (an IP literal) may not be called, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            ip = embedded
    if ip.is_loopback:
        return None if policy.allow_loopback else f"{ip} is a loopback address"
    for kind, flag in (("private", ip.is_private), ("link-local", ip.is_link_local),
                       ("multicast", ip.is_multicast), ("reserved", ip.is_reserved),
                       ("unspecified", ip.is_unspecified)):
        if flag:
            return f"{ip} is a {kind} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


def resolve(host: str, port: int, policy: AddressPolicy) -> list[tuple]:
    """``getaddrinfo`` answers for ``host`` (TCP), all of them allowed; :class:`UnsafeUrl` otherwise.

    Every address must pass, not just one: the one a client picks is not ours to choose.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise UnsafeUrl(f"the host {host!r} does not resolve ({exc.strerror or exc})") from exc
    if not infos:
        raise UnsafeUrl(f"the host {host!r} does not resolve")
    for info in infos:
        why = refusal(str(info[4][0]), policy)
        if why is not None:
            raise UnsafeUrl(f"the host {host!r} resolves to {why}: webhook endpoints must be reachable on the "
                            "public internet")
    return infos


def check_url(url: str, policy: AddressPolicy, *, resolve_host: bool = True) -> SplitResult:
    """The URL split into its parts when an endpoint may have it; :class:`UnsafeUrl` saying why not."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise UnsafeUrl("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"the URL cannot be read: {exc}") from exc
    if parts.scheme not in ("https", "http"):
        raise UnsafeUrl("the URL must start with https://")
    if parts.scheme == "http" and not policy.allow_http:
        raise UnsafeUrl("the URL must use https:// (plain http is allowed only on a development deployment)")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("the URL must not carry a user name or password: authenticate the request by its signature "
                        "(Kloyst-Signature header)")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.fragment:
        raise UnsafeUrl("the URL must not have a #fragment")
    if resolve_host:
        resolve(parts.hostname, port or (443 if parts.scheme == "https" else 80), policy)
    return parts
