"""The production gunicorn configuration serves the application, and drains on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import kubernetes_validate
import yaml

from provisioning.audit.log import Origin, Source
from provisioning.tokens import credentials
from tests.test_cli import free_port, get

CONFIG = Path(__file__).parent.parent / "deploy" / "gunicorn.conf.py"


def gunicorn(database, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database.url,
        "PROVISIONING_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(CONFIG)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60  # a loaded CI machine starts two workers slowly
    while True:
        try:
            status, body = get(f"http://127.0.0.1:{port}/readyz")
            assert status == 200 and body["status"] == "ready"
            return process
        except OSError:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)


def test_gunicorn_config_serves_a_migrated_database(databases):
    database = databases.empty()
    database.upgrade()
    process = gunicorn(database, free_port())
    process.terminate()
    process.wait(timeout=10)
    database.dispose()


def test_sigterm_drains_a_request_under_way(databases):
    """A request half sent when gunicorn is told to stop is still read and answered."""
    database = databases.empty()
    database.upgrade()
    with database.transaction() as session:
        token = credentials.create(
            session, "drain", ["decisions:check"], Origin("test", Source.CLI)
        )
    port = free_port()
    process = gunicorn(database, port)
    try:
        body = json.dumps(
            {
                "user": "nobody@example.com",
                "connector": "github",
                "action": "read",
                "interface": "code",
            }
        ).encode()
        head = (
            f"POST /api/v1/decisions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"X-Request-ID: drain-1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(head + body[:10])
            time.sleep(0.5)  # the worker has the request and waits for its body
            process.send_signal(signal.SIGTERM)
            time.sleep(1)
            sock.sendall(body[10:])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1] in (b"200", b"404"), answer
        assert b"X-Request-ID: drain-1" in rest
        assert process.wait(timeout=30) == 0
        # And then it listens no more.
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            raise AssertionError("gunicorn still accepts connections")
        except OSError:
            pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        database.dispose()


# -- the image, compose and Kubernetes files (checked offline; the image is built by
# deploy/test-image.sh) ---------------------------------------------------------------

DEPLOY = CONFIG.parent
KUBERNETES = DEPLOY / "kubernetes"


def manifests() -> dict[str, dict]:
    """Every Kubernetes object in deploy/kubernetes/, by kind/name."""
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def test_the_manifests_validate_against_the_kubernetes_schemas():
    objects = manifests()
    for document in objects.values():
        kubernetes_validate.validate(document, "1.31.0", strict=True)
    assert {
        "Deployment/provisioning-web",
        "Deployment/provisioning-worker",
        "Job/provisioning-migrate",
        "Service/provisioning-web",
        "Ingress/provisioning",
        "PodDisruptionBudget/provisioning-web",
        "HorizontalPodAutoscaler/provisioning-web",
        "ConfigMap/provisioning-config",
        "NetworkPolicy/provisioning-web",
    } <= set(objects)


def test_the_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_every_pod_runs_restricted_from_the_configmap_and_the_secret():
    for name, document in manifests().items():
        if document["kind"] not in ("Deployment", "Job"):
            continue
        pod = document["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert context["runAsUser"] != 0, name
            sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
            assert sources == {
                "configMapRef": "provisioning-config",
                "secretRef": "provisioning-secrets",
            }
            assert not container.get("env"), f"{name}: settings belong in the ConfigMap"
            assert container["resources"]["requests"] and container["resources"]["limits"]
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, name
    web = manifests()["Deployment/provisioning-web"]["spec"]["template"]["spec"]
    (container,) = web["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # gunicorn's graceful_timeout (30 s) fits inside the pod's grace period.
    assert web["terminationGracePeriodSeconds"] > 30 + 5


def test_the_compose_file_names_its_services_and_bakes_no_secret():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "migrate", "web", "proxy", "worker"}
    assert services["db"]["healthcheck"] and "db-data" in compose["volumes"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("web", "worker"):
        assert services[name]["deploy"]["replicas"] == 2
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    for name in ("migrate", "web", "worker"):
        assert services[name]["env_file"] == "provisioning.env"
        assert services[name]["read_only"] is True
    assert services["proxy"]["ports"] == ["8000:8000"]
    text = (DEPLOY / "compose.yaml").read_text()
    assert "PASSWORD" not in text and "SECRET" not in text and "TOKEN" not in text


def compose_errors(document: dict) -> list[str]:
    """Where ``document`` breaks the compose specification's JSON Schema (as check-jsonschema
    vendors it from compose-spec/compose-spec), each as path: message."""
    from importlib.resources import files

    from jsonschema import Draft202012Validator

    vendored = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(vendored.read_text())
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_the_compose_file_follows_the_compose_specification():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose_errors(compose) == []
    # The schema has teeth: a misspelt key or a wrong shape is named.
    compose["services"]["web"]["depends_on"]["migrate"]["condition"] = "service_done"
    compose["services"]["worker"]["replica"] = 2
    errors = compose_errors(compose)
    assert any(e.startswith("services/web/depends_on:") for e in errors)
    assert any(e.startswith("services/worker") and "'replica'" in e for e in errors)


def test_the_dockerfile_builds_a_wheel_and_runs_unprivileged():
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if not line.startswith("#")]
    assert lines[0].startswith("ARG BASE_IMAGE=")
    stages = [line for line in lines if line.startswith("FROM ")]
    assert stages == ["FROM ${BASE_IMAGE} AS build", "FROM ${BASE_IMAGE} AS runtime"]
    build, runtime = text.split("FROM ${BASE_IMAGE} AS runtime")
    assert "pip wheel" in build and "PIP_NO_CACHE_DIR=1" in build
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert not re.search(r"apt-get|gcc|build-essential|pip install", runtime)
    (user,) = re.findall(r"^USER (\S+)", runtime, re.M)
    assert user.split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", runtime, re.M)
    entrypoint = (DEPLOY / "entrypoint.sh").read_text()
    for command in ("serve)", "worker |", "db |"):
        assert command in entrypoint
    assert "exec gunicorn -c /etc/provisioning/gunicorn.conf.py" in entrypoint


def test_the_alerting_rules_name_metrics_the_service_exports():
    rules = yaml.safe_load((DEPLOY / "alerts.yaml").read_text())["groups"][0]["rules"]
    exported = {
        "outbox_dead_letters",
        "outbox_oldest_age_seconds",
        "delivery_errors_total",
        "scheduler_leader",
        "job_last_success_timestamp_seconds",
        "background_alive",
        "http_request_duration_seconds_count",
        "http_request_duration_seconds_bucket",
    }
    used = set()
    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["annotations"]["summary"]
        used |= set(re.findall(r"[a-z_]+(?=[{\[) ])", rule["expr"])) & exported
    assert used == exported
