"""OpenTelemetry tracing: with an OTLP endpoint configured, a request and its SQL
statements reach a real OTLP/HTTP receiver as one trace; without one, nothing of
OpenTelemetry's SDK is loaded."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

# The test extra installs the otel extra: these fail, never skip, without it.
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_service

from provisioning.settings import load
from provisioning.tokens import credentials
from provisioning.web.app import create_app

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: keeps every span it is sent."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.paths.append(self.path)
                receiver.requests.append(trace_service.ExportTraceServiceRequest.FromString(body))
                answer = trace_service.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        found = []
        for exported in self.requests:
            for resource_spans in exported.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found.extend((resource, span) for span in scope_spans.spans)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attributes(span: Any) -> dict[str, Any]:
    return {a.key: a.value.string_value or a.value.int_value for a in span.attributes}


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


def test_a_request_and_its_statements_reach_the_receiver_as_one_trace(database, receiver, origin):
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    settings = load(
        database_url=database.url,
        otel_exporter_otlp_endpoint=receiver.url,
        otel_service_name="provisioning-test",
    )
    app = create_app(settings, database)
    provider = app.extensions["provisioning.tracer_provider"]
    try:
        with database.transaction() as session:
            secret = credentials.create(session, "tracer", ["admin:read"], origin)
        answer = app.test_client().get(
            "/api/v1/connectors",
            headers={
                "Authorization": f"Bearer {secret}",
                "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                "X-Request-ID": "trace-me-0001",
            },
        )
        assert answer.status_code == 200
        answer.close()  # the request's span ends when its answer is closed, as a server does
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()
        SQLAlchemyInstrumentor().uninstrument()

    assert set(receiver.paths) == {"/v1/traces"}
    spans = receiver.spans()
    assert {resource["service.name"] for resource, _ in spans} == {"provisioning-test"}
    (request,) = [span for _, span in spans if span.name == "GET /api/v1/connectors"]
    assert request.trace_id.hex() == TRACE_ID  # the caller's trace, carried on
    assert request.parent_span_id.hex() == PARENT_ID
    assert attributes(request)["http.route"] == "/api/v1/connectors"
    assert attributes(request)["provisioning.request_id"] == "trace-me-0001"
    statements = [
        attributes(span)
        for _, span in spans
        if span.parent_span_id == request.span_id and span.trace_id == request.trace_id
    ]
    texts = [a.get("db.statement") or a.get("db.query.text") or "" for a in statements]
    assert any("FROM connectors" in text for text in texts), statements
    assert secret not in str(spans)


def test_without_an_endpoint_no_opentelemetry_sdk_is_loaded(tmp_path):
    script = (
        "import sys\n"
        "from provisioning.database import Database\n"
        "from provisioning.settings import load\n"
        "from provisioning.web.app import create_app\n"
        f"url = 'sqlite:///{tmp_path}/t.db'\n"
        "database = Database(url)\n"
        "database.upgrade()\n"
        "app = create_app(load(database_url=url), database, background=False)\n"
        "assert 'provisioning.tracer_provider' not in app.extensions\n"
        "print(sorted(m for m in sys.modules if m.startswith(("
        "'opentelemetry.sdk', 'opentelemetry.instrumentation', 'opentelemetry.exporter'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"
