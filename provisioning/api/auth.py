"""Who is calling /api/v1: OAuth 2.0 JWT access tokens (RFC 9068) or hashed static API tokens.

JWTs are checked with authlib's RFC 9068 validator on joserfc: signature
against the IdP's JWKS (fetched over HTTP, cached, fetched again when a token
names a key id we do not know, at most once per ``refetch_interval``),
``typ: at+jwt``, issuer, audience, expiry (with a small clock skew), and
scopes. Okta's ``scp`` (a list) and ``cid`` are read as ``scope`` and
``client_id``. Static tokens (``prov_...``) are looked up by hash.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6750 import InsufficientScopeError, InvalidTokenError
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from authlib.oauth2.rfc9068.claims import JWTAccessTokenClaims
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from provisioning.database import Database
from provisioning.tokens import credentials

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
REALM = "provisioning"
UNKNOWN = "unknown or revoked token"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its name for the audit log, and its scopes."""

    name: str
    scopes: frozenset[str]
    kind: str  # "jwt" or "token"


class JWKSCache:
    """The IdP's signing keys, fetched over HTTP and kept until a token names an unknown kid."""

    def __init__(self, url: str, *, timeout: float = 5.0, refetch_interval: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout
        self.refetch_interval = refetch_interval
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def _fetch(self) -> KeySet:
        with urllib.request.urlopen(self.url, timeout=self.timeout) as response:
            document = json.loads(response.read())
        keys = KeySet.import_key_set(document)
        self._keys, self._fetched_at = keys, time.monotonic()
        return keys

    def keys_for(self, kid: str | None) -> KeySet:
        """The key set, fetched again first if it lacks ``kid`` (rate-limited)."""
        with self._lock:
            keys = self._keys
            if keys is None:
                return self._fetch()
            known = kid is None or any(k.kid == kid for k in keys.keys)
            if not known and time.monotonic() - self._fetched_at >= self.refetch_interval:
                return self._fetch()
            return keys


class AccessTokenValidator(JWTBearerTokenValidator):
    """Bearer tokens: a static API token by its prefix, otherwise an RFC 9068 JWT."""

    def __init__(
        self,
        database: Database,
        *,
        issuer: str | None,
        audience: str | None,
        jwks: JWKSCache | None,
        leeway: int = 30,
    ) -> None:
        super().__init__(issuer=issuer, resource_server=audience, realm=REALM)
        self.database = database
        self.jwks = jwks
        self.leeway = leeway

    def _invalid(self, description: str) -> InvalidTokenError:
        return InvalidTokenError(description=description, realm=REALM)

    def static_token(self, token_string: str, scopes: list[str]) -> credentials.Principal:
        """A static API token, checked without authlib's request wrapper (the hot path).

        :raises InvalidTokenError: unknown or revoked; :raises InsufficientScopeError.
        """
        principal = self.database.hot_read(
            lambda connection: credentials.authenticate(connection, token_string)
        )
        if principal is None:
            raise self._invalid(UNKNOWN)
        self.validate_token(principal, scopes, None)
        credentials.note_use(self.database, principal)
        return principal

    def authenticate_token(self, token_string: str) -> Any:
        if token_string.startswith(credentials.PREFIX):
            return self.static_token(token_string, [])
        if token_string.count(".") != 2:  # not a JWT (a compact JWS): no token of ours
            raise self._invalid(UNKNOWN)
        if self.jwks is None or not self.issuer or not self.resource_server:
            raise self._invalid("JWT access tokens are not configured")
        try:
            header = extract_compact(token_string.encode()).protected
            keys = self.jwks.keys_for(header.get("kid"))
            token = jwt.decode(token_string, keys, algorithms=ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise self._invalid(f"access token rejected: {exc}") from None
        except OSError:
            raise self._invalid("the IdP's signing keys cannot be fetched") from None
        claims = dict(token.claims)
        # Okta names the client ``cid`` and sends scopes as a list in ``scp``.
        if "client_id" not in claims and "cid" in claims:
            claims["client_id"] = claims["cid"]
        if "scope" not in claims and isinstance(claims.get("scp"), list):
            claims["scope"] = " ".join(str(s) for s in claims["scp"])
        options = {
            "iss": {"essential": True, "value": self.issuer},
            "exp": {"essential": True},
            "aud": {"essential": True, "value": self.resource_server},
            "sub": {"essential": True},
            "client_id": {"essential": True},
            "iat": {"essential": True},
        }
        return JWTAccessTokenClaims(claims, token.header, options)

    def validate_token(self, token: Any, scopes: Any, request: Any, **_: Any) -> None:
        if isinstance(token, credentials.Principal):
            if self.scope_insufficient(" ".join(sorted(token.scopes)), scopes):
                raise InsufficientScopeError()
            return
        try:
            token.validate(leeway=self.leeway)
        except JoseError as exc:
            raise self._invalid(f"access token rejected: {exc}") from None
        if self.scope_insufficient(token.get("scope", ""), scopes):
            raise InsufficientScopeError()


def caller_of(token: Any) -> Caller:
    if isinstance(token, credentials.Principal):
        return Caller(token.name, token.scopes, "token")
    scopes = str(token.get("scope") or "").split()
    return Caller(str(token["sub"]), frozenset(scopes), "jwt")


def protector(validator: AccessTokenValidator) -> ResourceProtector:
    protect = ResourceProtector()
    protect.register_token_validator(validator)
    return protect


def www_authenticate(error: OAuth2Error, scope: str | None) -> str:
    """The ``WWW-Authenticate`` challenge for a refused request (RFC 6750 section 3)."""
    parts = [f'Bearer realm="{REALM}"']
    if error.error and error.error != "missing_authorization":
        parts.append(f'error="{error.error}"')
    if error.error == "insufficient_scope" and scope:
        parts.append(f'scope="{scope}"')
    return ", ".join(parts)
