"""The Flask application factory: wires settings, database and the HTTP edges together."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from flask import Flask

from provisioning import api, console
from provisioning.database import Database
from provisioning.hooks.okta import okta_hooks, secret_digests
from provisioning.okta.inbox import Processor
from provisioning.settings import Settings, load
from provisioning.web import bodies, logs, problems, tracing
from provisioning.web.health import health
from provisioning.web.metrics import metrics, registry_for


def create_app(
    settings: Settings | None = None,
    database: Database | None = None,
    *,
    background: bool = True,
) -> Flask:
    """Build the application; reads the environment when ``settings`` is not given.

    With ``background`` (the default) and event hooks configured, a thread
    applies stored Okta deliveries after they are acknowledged; it is reached
    as ``app.extensions["provisioning.okta_inbox"]`` and stopped with
    ``.stop()``.
    """
    settings = settings or load()
    database = database or Database(settings.database_url)
    app = api.application("provisioning")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    # Operations (issue #23): request ids, the request line, request durations; first,
    # so that every other hook runs with the request id in force.
    logs.install(app)
    bodies.install(app)
    app.json.sort_keys = False
    app.extensions["provisioning.settings"] = settings
    app.extensions["provisioning.database"] = database
    app.logger.setLevel(getattr(logging, settings.log_level))
    app.extensions["provisioning.okta_hook_digests"] = secret_digests(settings)
    app.extensions["provisioning.metrics_registry"] = registry_for(database)
    if background and settings.okta_hook_secret_list:
        app.extensions["provisioning.okta_inbox"] = Processor(database, settings).start()
    problems.install(app)
    app.register_blueprint(health)
    app.register_blueprint(metrics)
    app.register_blueprint(okta_hooks)
    api.register(app, settings, database)
    # The admin console at /console/ (provisioning/console): its own sessions and sign-in.
    console.register(app, settings, database)
    # Edges in other packages (the SCIM provider) mount themselves: entry points
    # "provisioning.web", so that provisioning never imports them.
    for entry in entry_points(group="provisioning.web"):
        entry.load()(app, settings, database)
    # OpenTelemetry, when an OTLP endpoint is configured (the `otel` extra).
    tracing.install(app, database, settings)
    return app
