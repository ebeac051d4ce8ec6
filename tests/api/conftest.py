"""A test issuer (RSA keys, JWKS over real HTTP on 127.0.0.1) and API clients with credentials."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from provisioning.audit.log import Origin, Source
from provisioning.settings import load
from provisioning.tokens import credentials
from provisioning.web.app import create_app

ISSUER = "https://idp.test/oauth2/default"
AUDIENCE = "api://provisioning"
ALL_SCOPES = [s.value for s in credentials.Scope]


class Issuer:
    """Mints RFC 9068 access tokens and serves its public keys as a JWKS over HTTP."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "key-1"}, private=True)
        self.other = RSAKey.generate_key(2048, parameters={"kid": "key-2"}, private=True)
        self.published = [self.key]
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                body = json.dumps(
                    {"keys": [k.as_dict(private=False) for k in issuer.published]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/keys"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def token(
        self,
        scopes: list[str] | None = None,
        *,
        key: RSAKey | None = None,
        header: dict[str, Any] | None = None,
        okta: bool = False,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        key = key or self.key
        body: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "ada@example.com",
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        scopes = ALL_SCOPES if scopes is None else scopes
        if okta:
            body.update(cid="0oa-gateway", scp=scopes)
        else:
            body.update(client_id="admin-console", scope=" ".join(scopes))
        body.update(claims)
        protected = {"alg": "RS256", "typ": "at+jwt", "kid": key.kid}
        protected.update(header or {})
        return jwt.encode(protected, body, key)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    issuer = Issuer()
    yield issuer
    issuer.close()


class Api:
    """A test client for one app, with helpers for credentials."""

    def __init__(self, app: Any, database: Any, issuer: Issuer) -> None:
        self.app = app
        self.database = database
        self.issuer = issuer
        self.client = app.test_client()

    def static_token(self, name: str, scopes: list[str]) -> str:
        with self.database.transaction() as session:
            return credentials.create(session, name, scopes, Origin("test", Source.CLI))

    def headers(
        self, scopes: list[str] | None = None, sub: str | None = None, **extra: str
    ) -> dict[str, str]:
        claims = {"sub": sub} if sub else {}
        return {"Authorization": f"Bearer {self.issuer.token(scopes, **claims)}", **extra}

    def request(
        self,
        method: str,
        path: str,
        scopes: list[str] | None = None,
        sub: str | None = None,
        **kw: Any,
    ):
        """``sub``: the JWT's subject, the person asking (default ada@example.com)."""
        headers = {**self.headers(scopes, sub), **kw.pop("headers", {})}
        return self.client.open(path, method=method, headers=headers, **kw)

    def get(self, path: str, **kw: Any):
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any):
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any):
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any):
        return self.request("DELETE", path, **kw)


def make_app(database: Any, issuer: Issuer, **settings: Any) -> Any:
    config = load(
        database_url=database.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwks_url=issuer.url,
        **settings,
    )
    return create_app(config, database)


@pytest.fixture
def api(database, issuer) -> Api:
    return Api(make_app(database, issuer), database, issuer)
