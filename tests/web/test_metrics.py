"""/metrics: one charset in its content type; request durations by route template and
status; each job's last success, whichever worker ran it; job durations."""

from __future__ import annotations

import re
import time

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from jobs.runner import run_job
from provisioning.settings import load
from provisioning.web.app import create_app


def samples(client, name: str) -> list:
    text = client.get("/metrics").get_data(as_text=True)
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_the_content_type_names_one_charset(database):
    client = create_app(load(database_url=database.url), database, background=False).test_client()
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert answer.headers["Content-Type"].lower().count("charset") == 1


def test_request_durations_are_counted_by_route_template_and_status(database):
    client = create_app(load(database_url=database.url), database, background=False).test_client()
    for target in (8123, 8124, 8125):
        assert client.get(f"/api/v1/targets/{target}").status_code == 401
    assert client.get("/no/such/path/9137").status_code == 404
    counts = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in samples(client, "http_request_duration_seconds_count")
    }
    # The template, never the id (other tests of this process add their own samples).
    (route,) = [
        key
        for key in counts
        if key[0] == "GET" and key[2] == "401" and re.fullmatch(r"/api/v1/targets/<[^>]+>", key[1])
    ]
    assert counts[route] >= 3
    assert counts[("GET", "(unmatched)", "404")] >= 1
    assert not any("8123" in key[1] or "9137" in key[1] for key in counts)


def test_each_jobs_last_success_is_shown_from_the_database(database):
    settings = load(database_url=database.url)
    client = create_app(settings, database, background=False).test_client()
    assert not [s for s in samples(client, "job_last_success_timestamp_seconds")]
    before = REGISTRY.get_sample_value(
        "job_duration_seconds_count", {"job": "stale-scan", "outcome": "succeeded"}
    )
    run = run_job(database, settings, "stale-scan")
    (last,) = samples(client, "job_last_success_timestamp_seconds")
    assert last.labels == {"job": "stale-scan"}
    assert abs(last.value - run.finished_at.timestamp()) < 1e-3
    assert abs(last.value - time.time()) < 60
    (took,) = samples(client, "job_last_success_duration_seconds")
    assert took.value >= 0
    after = REGISTRY.get_sample_value(
        "job_duration_seconds_count", {"job": "stale-scan", "outcome": "succeeded"}
    )
    assert after == (before or 0) + 1
