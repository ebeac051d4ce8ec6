"""The admin REST API at /api/v1: thin handlers over the domain, OAuth 2.0 and OpenAPI 3.1."""

from __future__ import annotations

from flask import Flask

from provisioning.api import (
    audit,
    authzen,
    connectors,
    decisions,
    directory,
    docs,
    grants,
    holds,
    mappings,
    offboardings,
    okta,
    oversight,
    requests,
    reviews,
    separation,
    targets,
)
from provisioning.api.auth import AccessTokenValidator, JWKSCache, protector
from provisioning.api.edge import api, application
from provisioning.database import Database
from provisioning.entitlements.decisions import LastUseRecorder
from provisioning.settings import Settings

__all__ = ["application", "register"]

_ROUTES = (
    audit,
    connectors,
    decisions,
    directory,
    grants,
    holds,
    mappings,
    offboardings,
    okta,
    oversight,
    requests,
    reviews,
    separation,
    targets,
)


def register(app: Flask, settings: Settings, database: Database) -> None:
    """Mount /api/v1 (an application made by :func:`application`) with its authentication."""
    jwks = JWKSCache(settings.jwks_url) if settings.jwks_url else None
    validator = AccessTokenValidator(
        database,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        jwks=jwks,
        leeway=settings.jwt_leeway_seconds,
    )
    app.extensions["provisioning.api.protector"] = protector(validator)
    app.extensions["provisioning.api.jwks"] = jwks
    app.extensions["provisioning.api.last_use"] = LastUseRecorder(database, background=True)
    app.register_api(api)  # type: ignore[attr-defined]
    app.register_blueprint(docs.docs)
    app.register_blueprint(authzen.access)
