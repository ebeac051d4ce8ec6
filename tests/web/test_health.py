"""Liveness, readiness and error shapes of the HTTP edge."""

from __future__ import annotations

from provisioning.settings import load
from provisioning.web.app import create_app


def client_for(database):
    return create_app(load(database_url=database.url), database).test_client()


def test_healthz_and_readyz(database):
    client = client_for(database)
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["schema"] == database.head()


def test_readyz_is_503_problem_json_before_migrations(databases):
    database = databases.empty()
    response = client_for(database).get("/readyz")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.json["status"] == 503
    assert "expected" in response.json["detail"]
    database.dispose()


def test_unknown_path_and_method_are_problem_json(database):
    client = client_for(database)
    missing = client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.mimetype == "application/problem+json"
    assert missing.json["title"] == "Not Found"
    wrong = client.post("/healthz")
    assert wrong.status_code == 405
    assert "GET" in wrong.headers["Allow"]
