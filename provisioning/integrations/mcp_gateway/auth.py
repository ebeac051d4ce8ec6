"""Who is calling the gateway: the person's bearer JWT, checked by the service's own
RFC 9068 validation (:mod:`provisioning.api.auth`: signature against the issuer's JWKS,
issuer, expiry) with the connector's resource identifier as audience; served to FastMCP
as its token verifier, whose RFC 9728 provider answers 401 with ``WWW-Authenticate``
naming the protected resource metadata, which it serves."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from authlib.oauth2 import OAuth2Error
from fastmcp.server.auth import RemoteAuthProvider, TokenVerifier
from fastmcp.server.auth.auth import AccessToken
from pydantic import AnyHttpUrl

from provisioning.api.auth import AccessTokenValidator, JWKSCache
from provisioning.tokens import credentials


class PersonTokens(TokenVerifier):
    """A bearer JWT for this connector's resource, or nothing (FastMCP then answers 401)."""

    def __init__(
        self, *, issuer: str, jwks_url: str, resource: str, person_claim: str, leeway: int
    ) -> None:
        super().__init__()
        self.person_claim = person_claim
        self.validator = AccessTokenValidator(
            None,  # type: ignore[arg-type]  (no static tokens here: see verify_token)
            issuer=issuer,
            audience=resource,
            jwks=JWKSCache(jwks_url),
            leeway=leeway,
        )

    def _check(self, token: str) -> dict[str, Any] | None:
        if token.startswith(credentials.PREFIX):
            return None  # the service's API tokens are no person's
        try:
            claims = self.validator.authenticate_token(token)
            self.validator.validate_token(claims, [], None)
        except OAuth2Error:
            return None
        person = claims.get(self.person_claim)
        if not isinstance(person, str) or not person:
            return None
        return dict(claims)

    async def verify_token(self, token: str) -> AccessToken | None:
        claims = await anyio.to_thread.run_sync(self._check, token)
        if claims is None:
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id") or ""),
            scopes=str(claims.get("scope") or "").split(),
            expires_at=int(claims["exp"]),
            resource=self.validator.resource_server,
            claims=claims,
        )


class ConnectorResource(RemoteAuthProvider):
    """RFC 9728: the protected resource is the connector's resource identifier."""

    def __init__(self, verifier: PersonTokens, *, resource: str, issuer: str) -> None:
        super().__init__(
            token_verifier=verifier,
            authorization_servers=[AnyHttpUrl(issuer)],
            base_url=resource,
        )
        self.resource = resource

    def _get_resource_url(self, path: str | None = None) -> AnyHttpUrl | None:
        return AnyHttpUrl(self.resource)
