"""Where an external endpoint's URL may point.

An external endpoint makes the gateway send requests (with a credential) to a URL an admin
typed. Link-local addresses (cloud metadata services live there: 169.254.169.254,
fd00:ec2::254) would hand instance credentials to whoever can read the answers, and
Modelport's own address makes an endpoint call itself. Both are refused unless the
``allow_internal_upstreams`` setting says this installation wants them. Other private
addresses stay allowed: a vLLM or Triton server on the local network is the common case.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from modelport.core.errors import InvalidRequest

__all__ = ["check_upstream_url"]

_METADATA_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


def _addresses(host: str, port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return {ipaddress.ip_address(host)}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError:
        return set()  # unresolvable now: the gateway will say so when it is called
    except ValueError:  # a NUL, or a name IDNA cannot encode: no resolver takes it
        raise InvalidRequest(
            f"url host {host!r} is not a valid host name", field="runtime_options.url"
        ) from None
    return {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}


def _is_own(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, own: tuple[str, int]
) -> bool:
    own_host, own_port = own
    if port != own_port:
        return False
    if address.is_loopback or address.is_unspecified:
        return True
    try:
        own_address = ipaddress.ip_address(own_host)
    except ValueError:
        return False
    return own_address.is_unspecified or address == own_address


def check_upstream_url(url: str, *, own: tuple[str, int], allow_internal: bool) -> None:
    """Refuse a URL that reaches link-local or metadata addresses, or this server itself."""
    if allow_internal:
        return
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise InvalidRequest(
            f"url {url!r} is not a valid URL", field="runtime_options.url"
        ) from None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidRequest(
            f"url {url!r} has an invalid port", field="runtime_options.url"
        ) from None
    hint = "; set MODELPORT_ALLOW_INTERNAL_UPSTREAMS=true if this is intended"
    if host in _METADATA_NAMES:
        raise InvalidRequest(
            f"url host {host!r} is a cloud metadata service{hint}", field="runtime_options.url"
        )
    for address in _addresses(host, port):
        if address in _METADATA_ADDRESSES or address.is_link_local:
            raise InvalidRequest(
                f"url {url!r} reaches {address}, a link-local or cloud metadata address{hint}",
                field="runtime_options.url",
            )
        if _is_own(address, port, own):
            raise InvalidRequest(
                f"url {url!r} is this Modelport server itself: the endpoint would call "
                f"itself{hint}",
                field="runtime_options.url",
            )
