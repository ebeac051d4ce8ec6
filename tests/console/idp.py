"""A small OpenID Connect provider on 127.0.0.1: authorization code flow with PKCE (S256).

It signs in whoever the test says (``person``) without a login form: discovery, the
authorization endpoint (which checks the client, the redirect URI and the PKCE challenge
and redirects back with a code), the token endpoint (which checks the code, the redirect
URI and the verifier, and answers an ID token signed with its RSA key), and its JWKS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from joserfc import jwt
from joserfc.jwk import RSAKey

CLIENT_ID = "console-test"


class Provider:
    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "idp-1"}, private=True)
        self.person: dict[str, Any] = {}
        self.signing_key = self.key  # another key: ID tokens the JWKS cannot verify
        self.codes: dict[str, dict[str, Any]] = {}
        self.refusals: list[str] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: dict | None = None, **headers: str) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    self._send(200, provider.metadata())
                elif url.path == "/keys":
                    self._send(200, {"keys": [provider.key.as_dict(private=False)]})
                elif url.path == "/authorize":
                    status, location = provider.authorize(query)
                    self._send(
                        status,
                        {"error": location} if status != 302 else None,
                        **({"Location": location} if status == 302 else {}),
                    )
                else:
                    self._send(404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if urlparse(self.path).path == "/token":
                    status, body = provider.exchange(form)
                    self._send(status, body, **{"Cache-Control": "no-store"})
                else:
                    self._send(404)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/keys",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
        }

    def authorize(self, query: dict[str, str]) -> tuple[int, str]:
        if query.get("client_id") != CLIENT_ID or query.get("response_type") != "code":
            self.refusals.append("client or response type")
            return 400, "unauthorized_client"
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            self.refusals.append("no PKCE")
            return 400, "invalid_request"
        code = secrets.token_urlsafe(16)
        self.codes[code] = {**query, "person": dict(self.person)}
        back = {"code": code, "state": query.get("state", "")}
        return 302, f"{query['redirect_uri']}?{urlencode(back)}"

    def exchange(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = self.codes.pop(form.get("code", ""), None)
        if grant is None or form.get("grant_type") != "authorization_code":
            return 400, {"error": "invalid_grant"}
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        if (
            challenge != grant["code_challenge"]
            or form.get("redirect_uri") != grant["redirect_uri"]
        ):
            self.refusals.append("verifier or redirect")
            return 400, {"error": "invalid_grant"}
        now = int(time.time())
        person = grant["person"]
        claims = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "sub": person.get("preferred_username", "nobody"),
            "iat": now,
            "exp": now + 300,
            "nonce": grant.get("nonce"),
            **person,
        }
        key = self.signing_key
        id_token = jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, key)
        return 200, {
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": grant.get("scope", "openid"),
            "id_token": id_token,
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
