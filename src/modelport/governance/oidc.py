"""OpenID Connect bearer tokens: JWTs verified against the issuer's published keys (JWKS).

The keys are fetched over HTTP asynchronously (never blocking the event loop), cached, and
fetched again when a token names a key id not in the cache (the issuer rotated its keys),
at most once every ``refetch_s`` so that tokens with made-up key ids cannot make Modelport
hammer the issuer. Signature, issuer, audience and expiry are checked by PyJWT; only the
asymmetric algorithms issuers sign with are accepted (never ``none`` or HMAC, which would let
anyone who knows a public key forge tokens).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt

from modelport.core.errors import Unauthorized, Unavailable

__all__ = ["ALGORITHMS", "OidcVerifier"]

log = logging.getLogger("modelport.auth")

ALGORITHMS = ("RS256", "ES256")
_LEEWAY_S = 30  # clocks of the issuer and Modelport differ a little


class OidcVerifier:
    """Verifies OIDC bearer tokens and names the user each one speaks for."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str = "",
        user_claim: str = "sub",
        refetch_s: float = 30.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("OIDC needs both MODELPORT_OIDC_ISSUER and MODELPORT_OIDC_AUDIENCE")
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.user_claim = user_claim
        self.refetch_s = refetch_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._keys: Mapping[str, Any] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many times the JWKS was fetched (tests, metrics)

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        """Whether ``token`` has a JWT's shape (three dot-separated parts)."""
        return token.count(".") == 2

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it is valid; ``Unauthorized`` saying why otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid OIDC token: {exc}") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise Unauthorized(
                f"invalid OIDC token: algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}"
            )
        kid = str(header.get("kid", ""))
        key = await self._key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=_LEEWAY_S,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid OIDC token: {exc}") from None
        return claims

    def user_of(self, claims: Mapping[str, Any]) -> str:
        """The Modelport user name a verified token speaks for (its ``user_claim``)."""
        value = claims.get(self.user_claim)
        if not isinstance(value, str) or not value:
            raise Unauthorized(f"invalid OIDC token: no '{self.user_claim}' claim naming the user")
        return value

    async def _key(self, kid: str) -> Any:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:  # one fetch at a time; the others use its result
            key = self._keys.get(kid)
            if key is None and self._may_fetch():
                await self._fetch()
                key = self._keys.get(kid)
        if key is None:
            raise Unauthorized(f"invalid OIDC token: unknown signing key id {kid!r}")
        return key

    def _may_fetch(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self.refetch_s

    async def _fetch(self) -> None:
        self._fetched_at = self._clock()
        self.fetches += 1
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                url = self.jwks_url or await self._discover(client)
                response = await client.get(url)
                response.raise_for_status()
                document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("OIDC signing keys could not be fetched: %s", exc)
            if self._keys:
                return  # keep verifying with the keys already known
            raise Unavailable(
                f"the OIDC issuer's signing keys could not be fetched ({exc}); retry later"
            ) from None
        self._keys = _parse_jwks(document)

    async def _discover(self, client: httpx.AsyncClient) -> str:
        response = await client.get(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        response.raise_for_status()
        url = response.json().get("jwks_uri")
        if not isinstance(url, str) or not url:
            raise ValueError("the issuer's openid-configuration has no jwks_uri")
        return url


def _parse_jwks(document: Any) -> dict[str, Any]:
    """kid -> public key, for each usable signing key of a JWKS document."""
    keys: dict[str, Any] = {}
    for entry in document.get("keys", []) if isinstance(document, dict) else []:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:  # a key type we do not use (e.g. symmetric): skip it
            log.debug("OIDC key %s skipped: %s", entry.get("kid"), exc)
            continue
        keys[str(entry.get("kid", ""))] = jwk.key
    return keys
