"""OpenTelemetry tracing, when OTEL_EXPORTER_OTLP_ENDPOINT is set: a span per request
named by its Flask route, a child span per SQL statement, sent over OTLP/HTTP.

The packages come with the ``otel`` extra and are imported here only when an endpoint
is configured, so a service without tracing loads none of them. Requests are traced by
OpenTelemetry's WSGI middleware, renamed to their route template (``POST
/api/v1/decisions``, as Flask's own instrumentation names them) and tagged with the
request id; statements by its SQLAlchemy instrumentation on the service's engine (the
token check and the decision's hot path read on raw driver cursors and are not traced).
Incoming ``traceparent`` headers are honoured (W3C trace context).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from provisioning import correlation
from provisioning.database import Database
from provisioning.settings import Settings

TRACES_PATH = "/v1/traces"  # what the OTLP/HTTP exporter appends to a base endpoint


def install(app: Flask, database: Database, settings: Settings) -> Any:
    """Trace ``app`` and ``database`` if an endpoint is configured; the tracer provider
    (to flush or shut down), else None."""
    endpoint = settings.otel_exporter_otlp_endpoint
    if not endpoint:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but tracing is not installed "
            f"(pip install 'connector-provisioning[otel]'): {exc}"
        ) from None

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + TRACES_PATH)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    app.wsgi_app = OpenTelemetryMiddleware(app.wsgi_app, tracer_provider=provider)  # type: ignore[method-assign]

    @app.before_request
    def _name_by_route() -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        if request.url_rule is not None:
            span.update_name(f"{request.method} {request.url_rule.rule}")
            span.set_attribute("http.route", request.url_rule.rule)
        request_id = correlation.current()
        if request_id:
            span.set_attribute("provisioning.request_id", request_id)

    # Its declared range stops below SQLAlchemy 2.1, whose engine events it uses unchanged
    # (tests/web/test_tracing.py sees the statements).
    SQLAlchemyInstrumentor().instrument(
        engine=database.engine, tracer_provider=provider, skip_dep_check=True
    )
    app.extensions["provisioning.tracer_provider"] = provider
    return provider
