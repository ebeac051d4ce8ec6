"""The Flask application factory: wires settings, database and the HTTP edges together."""

from __future__ import annotations

import logging

from flask import Flask

from provisioning.database import Database
from provisioning.settings import Settings, load
from provisioning.web import problems
from provisioning.web.health import health


def create_app(settings: Settings | None = None, database: Database | None = None) -> Flask:
    """Build the application; reads the environment when ``settings`` is not given."""
    settings = settings or load()
    database = database or Database(settings.database_url)
    app = Flask("provisioning")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False
    app.extensions["provisioning.settings"] = settings
    app.extensions["provisioning.database"] = database
    app.logger.setLevel(getattr(logging, settings.log_level))
    problems.install(app)
    app.register_blueprint(health)
    from scim.server import install as install_scim  # the edge depends on the domain

    install_scim(app, database, settings.scim_cursor_secret)
    return app
