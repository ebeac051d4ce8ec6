"""The admin console at /console/: server-rendered pages (Jinja2, htmx) over the domain."""

from __future__ import annotations

import datetime as dt

from flask import Flask

from provisioning.console import access_requests, auth, pages  # noqa: F401 (their routes)
from provisioning.database import Database
from provisioning.settings import Settings

__all__ = ["register"]


def register(app: Flask, settings: Settings, database: Database) -> None:
    """Mount /console/ with its signed-cookie sessions and, if configured, OIDC sign-in."""
    app.session_interface = auth.ConsoleSessions(settings, database)
    app.config.update(
        SESSION_COOKIE_NAME="console_session",
        SESSION_COOKIE_PATH=auth.PREFIX,
        SESSION_COOKIE_SECURE=settings.console_cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",  # the IdP's redirect back is a top-level GET
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=settings.console_session_hours),
    )
    auth.configure_oidc(app, settings)
    app.register_blueprint(pages.console)
