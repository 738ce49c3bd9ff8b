"""OpenID Connect tokens against a real local HTTP server publishing a JWKS.

The keys are made with ``cryptography``, the tokens signed with PyJWT; the verifier fetches
the JWKS over real HTTP, so what is tested is what runs: fetching once, caching, refetching
for an unknown key id no more often than allowed, and every way a token can be wrong.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from modelport.backends import LocalBackend
from modelport.control import RolloutController, create_control_app
from modelport.control import identity as identity_service
from modelport.control.app import ControlApp
from modelport.control.plane import ControlPlane
from modelport.core.errors import Unauthorized
from modelport.core.settings import Settings
from modelport.governance import SecretStore
from modelport.governance.oidc import OidcVerifier
from modelport.observability import RecentUsage, RevisionWindows, ShadowReports
from modelport.store import ArtifactStore, Database

ISSUER = "https://id.example.com"
AUDIENCE = "modelport"


class Issuer:
    """A JWKS served over HTTP from a thread, counting fetches; keys can be rotated."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.published: dict[str, Any] = {"rsa-1": self.rsa, "ec-1": self.ec}
        self.fetches = 0
        self.delay_s = 0.0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                time.sleep(issuer.delay_s)
                body = json.dumps(issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, private in self.published.items():
            algorithm = jwt.algorithms.RSAAlgorithm if kid.startswith("rsa") else None
            if algorithm is not None:
                jwk = json.loads(algorithm.to_jwk(private.public_key()))
                jwk.update(kid=kid, use="sig", alg="RS256")
            else:
                jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
                jwk.update(kid=kid, use="sig", alg="ES256")
            keys.append(jwk)
        return {"keys": keys}

    def token(self, kid: str = "rsa-1", key: Any = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}
        payload.update(claims)
        private = key if key is not None else self.published[kid]
        algorithm = "RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(payload, private, algorithm=algorithm, headers={"kid": kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    running = Issuer()
    yield running
    running.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _verifier(issuer: Issuer, clock: Clock | None = None) -> OidcVerifier:
    return OidcVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_url=issuer.url,
        refetch_s=30.0,
        clock=clock or time.monotonic,
    )


async def test_a_valid_token_is_accepted_and_names_its_user(issuer: Issuer) -> None:
    verifier = _verifier(issuer)
    claims = await verifier.verify(issuer.token())
    assert verifier.user_of(claims) == "alice"
    es = await verifier.verify(issuer.token("ec-1", sub="bob"))
    assert verifier.user_of(es) == "bob"


async def test_the_jwks_is_fetched_once_and_cached(issuer: Issuer) -> None:
    verifier = _verifier(issuer)
    for _ in range(5):
        await verifier.verify(issuer.token())
    await asyncio.gather(*(verifier.verify(issuer.token("ec-1")) for _ in range(5)))
    assert issuer.fetches == 1


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        ({"iss": "https://evil.example.com"}, "(?i)issuer"),
        ({"aud": "someone-else"}, "(?i)audience"),
        ({"exp": int(time.time()) - 3600}, "expired"),
    ],
)
async def test_wrong_claims_are_refused(
    issuer: Issuer, claims: dict[str, Any], problem: str
) -> None:
    with pytest.raises(Unauthorized, match=problem):
        await _verifier(issuer).verify(issuer.token(**claims))


async def test_a_bad_signature_is_refused(issuer: Issuer) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthorized, match=r"[Ss]ignature"):
        await _verifier(issuer).verify(issuer.token("rsa-1", key=stranger))
    token = issuer.token()
    header, _, signature = token.split(".")
    # The same signature over other claims (another user): refused.
    forged = json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "admin", "exp": 2**40})
    forged_payload = base64.urlsafe_b64encode(forged.encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized, match=r"[Ss]ignature"):
        await _verifier(issuer).verify(f"{header}.{forged_payload}.{signature}")


async def test_symmetric_and_unsigned_tokens_are_refused(issuer: Issuer) -> None:
    verifier = _verifier(issuer)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": int(time.time()) + 60}
    hs = jwt.encode(claims, "a-shared-secret-that-is-long-enough", algorithm="HS256")
    with pytest.raises(Unauthorized, match="algorithm"):
        await verifier.verify(hs)
    unsigned = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(Unauthorized, match="algorithm"):
        await verifier.verify(unsigned)
    assert issuer.fetches == 0  # refused before any key was needed


async def test_an_unknown_key_id_refetches_at_most_every_30_s(issuer: Issuer) -> None:
    clock = Clock()
    verifier = _verifier(issuer, clock)
    await verifier.verify(issuer.token())
    assert issuer.fetches == 1
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for _ in range(3):
        with pytest.raises(Unauthorized, match="unknown signing key id 'rsa-9'"):
            await verifier.verify(issuer.token("rsa-9", key=stranger))
    assert issuer.fetches == 1  # the first unknown kid came within 30 s of the first fetch
    clock.now += 31
    # The issuer rotated its keys meanwhile: the new one is found with one more fetch.
    issuer.published["rsa-2"] = stranger
    claims = await verifier.verify(issuer.token("rsa-2"))
    assert claims["sub"] == "alice"
    assert issuer.fetches == 2
    with pytest.raises(Unauthorized, match="unknown signing key id"):
        await verifier.verify(issuer.token("rsa-3", key=stranger))
    assert issuer.fetches == 2


async def test_fetching_keys_does_not_block_the_event_loop(issuer: Issuer) -> None:
    issuer.delay_s = 0.5
    verifier = _verifier(issuer)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await verifier.verify(issuer.token())
    finally:
        ticker.cancel()
    assert ticks >= 20, f"the loop ticked only {ticks} times during a 0.5 s fetch"


# -- through the control plane's guard -------------------------------------------------------------


@pytest.fixture
async def control(tmp_path: Path, issuer: Issuer) -> AsyncIterator[ControlApp]:
    settings = Settings(
        home=tmp_path / "home",
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_url=issuer.url,
    )
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    with db.session() as session:
        identity_service.create_team(session, name="search")
        identity_service.create_user(session, name="alice")
        identity_service.grant_role(session, team="search", user="alice", role="deployer")
        identity_service.create_user(session, name="mallory")
        identity_service.disable_user(session, "mallory")
    plane = ControlPlane(
        settings=settings,
        db=db,
        artifacts=ArtifactStore(tmp_path / "artifacts"),
        backend=LocalBackend(logs_dir=tmp_path / "logs"),
        admin_token="mpa_admin",
        publish_routes=lambda _: None,
        publish_keys=lambda _: None,
        usage=RecentUsage(),
        secrets=SecretStore(tmp_path / "secrets"),
    )
    await plane.identities.refresh()
    yield create_control_app(plane, RolloutController(plane, RevisionWindows(), ShadowReports()))
    db.close()


async def test_an_oidc_token_acts_as_the_user_it_names(control: ControlApp, issuer: Issuer) -> None:
    transport = httpx.ASGITransport(app=control)
    async with httpx.AsyncClient(transport=transport, base_url="http://control") as http:

        async def get(path: str, token: str) -> httpx.Response:
            return await http.get(path, headers={"authorization": f"Bearer {token}"})

        me = await get("/api/v1/me", issuer.token(sub="alice"))
        assert me.status_code == 200, me.text
        assert me.json() == {
            "name": "alice",
            "kind": "oidc",
            "admin": False,
            "teams": {"search": "deployer"},
            "project": None,
        }
        # Signed in, but no user of that name: no role, so nothing of any team.
        stranger = issuer.token(sub="eve")
        assert (await get("/api/v1/teams", stranger)).json() == []
        assert (await get("/api/v1/teams/search", stranger)).status_code == 403
        # A disabled user's logins stop at once.
        assert (await get("/api/v1/me", issuer.token(sub="mallory"))).status_code == 401
        expired = issuer.token(sub="alice", exp=int(time.time()) - 3600)
        reply = await get("/api/v1/me", expired)
        assert reply.status_code == 401
        assert "expired" in reply.json()["error"]["message"]


def test_an_issuer_without_an_audience_is_refused_when_settings_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Any token the issuer made for another application would otherwise pass.
    monkeypatch.setenv("MODELPORT_OIDC_ISSUER", "https://issuer.example")
    monkeypatch.delenv("MODELPORT_OIDC_AUDIENCE", raising=False)
    with pytest.raises(ValidationError, match="MODELPORT_OIDC_AUDIENCE"):
        Settings()
    monkeypatch.setenv("MODELPORT_OIDC_AUDIENCE", "modelport")
    assert Settings().oidc_audience == "modelport"
