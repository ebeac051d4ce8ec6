"""The OpenID AuthZEN Authorization API 1.0 at /access/v1 and its PDP metadata: thin
handlers over :mod:`provisioning.entitlements.authzen`, authenticated like /api/v1/decisions.

Every answer echoes the request's ``X-Request-ID`` (as every answer of the service does:
provisioning/web/logs.py). A request the API cannot read is a
400 in problem+json whose ``detail`` is the error message (a body not sent as JSON too:
the specification asks 400 there, not 415); nothing is recorded for it.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, json, request

from provisioning.api.edge import PROBLEM_TYPE, authenticate, caller, database
from provisioning.connectors.models import Interface
from provisioning.entitlements import authzen
from provisioning.entitlements.decisions import LastUseRecorder
from provisioning.tokens.credentials import Scope
from provisioning.web import bodies
from provisioning.web.problems import problem

CHECK = Scope.DECISIONS_CHECK.value
PREFIX = "/access/v1"
METADATA = "/.well-known/authzen-configuration"
# The metadata parameter naming each endpoint, and its path.
ENDPOINTS = {
    "access_evaluation_endpoint": f"{PREFIX}/evaluation",
    "access_evaluations_endpoint": f"{PREFIX}/evaluations",
    "search_subject_endpoint": f"{PREFIX}/search/subject",
    "search_resource_endpoint": f"{PREFIX}/search/resource",
    "search_action_endpoint": f"{PREFIX}/search/action",
}

access = Blueprint("authzen", __name__)
log = logging.getLogger("provisioning.authzen")


@access.before_request
def _authenticate() -> Response | None:
    return authenticate(CHECK)


class _BadRequest(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@access.errorhandler(_BadRequest)
def _bad_request(error: _BadRequest) -> Response:
    return problem(400, "Bad Request", error.detail, type=PROBLEM_TYPE + "invalid-request")


def _document() -> Any:
    """The request's JSON document (the body rule's limits), a 400 if there is none."""
    try:
        return bodies.document()
    except bodies.Refused as refused:
        if refused.code == 413:
            raise
        raise _BadRequest(refused.description or "the body is not a JSON document") from None


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status=200, mimetype="application/json")


def _decider(connection: Any) -> authzen.Decider:
    settings = current_app.extensions["provisioning.settings"]
    return authzen.Decider(connection, Interface(settings.authzen_interface))


def _recorded(outcomes: list[authzen.Outcome]) -> list[authzen.Outcome]:
    """Note each used grant's last use, and log each evaluation with the agent acting (at
    DEBUG: a line per evaluation costs more than the evaluation)."""
    recorder: LastUseRecorder = current_app.extensions["provisioning.api.last_use"]
    pep = caller().name
    for outcome in outcomes:
        if outcome.grant_id is not None:
            recorder.used(
                outcome.grant_id,
                recorded=outcome.last_used_at,
                agent=outcome.agent,
                evaluation_id=outcome.evaluation_id,
            )
        log.debug(
            "authzen evaluation %s: %s on %s/%s for %s by %s via %s",
            outcome.evaluation_id,
            outcome.decision,
            outcome.connector,
            outcome.action,
            outcome.reason,
            outcome.agent or "-",
            pep,
        )
    return outcomes


def _evaluate_one(document: Any) -> Response:
    try:
        question = authzen.evaluation(document)
        outcome = database().hot_read(lambda c: _decider(c).decide(question))
    except authzen.Invalid as exc:
        raise _BadRequest(str(exc)) from None
    return _json(_recorded([outcome])[0].answer())


@access.post(f"{PREFIX}/evaluation")
def evaluation() -> Response:
    """Access Evaluation API: one decision."""
    return _evaluate_one(_document())


@access.post(f"{PREFIX}/evaluations")
def evaluations() -> Response:
    """Access Evaluations API: decisions in request order, under the requested semantic."""
    document = _document()
    try:
        asked = authzen.batch(document)
    except authzen.Invalid as exc:
        raise _BadRequest(str(exc)) from None
    if asked is None:
        return _evaluate_one(document)
    outcomes = database().hot_read(lambda c: _decider(c).run(asked.items, asked.semantic))
    return _json({"evaluations": [o.answer() for o in _recorded(outcomes)]})


def _search(kind: str) -> Response:
    try:
        query = authzen.search(kind, _document())
        found = database().hot_read(lambda c: authzen.Searcher(_decider(c)).run(query))
    except authzen.Invalid as exc:
        raise _BadRequest(str(exc)) from None
    body: dict[str, Any] = {}
    if found.paged:
        body["page"] = {"next_token": found.next_token, "count": len(found.results)}
    body["results"] = found.results
    return _json(body)


@access.post(f"{PREFIX}/search/subject")
def search_subject() -> Response:
    """Subject Search API: the people who may do the action on the resource."""
    return _search("subject")


@access.post(f"{PREFIX}/search/resource")
def search_resource() -> Response:
    """Resource Search API: the resources on which the person may do the action."""
    return _search("resource")


@access.post(f"{PREFIX}/search/action")
def search_action() -> Response:
    """Action Search API: the actions the person may do on the resource."""
    return _search("action")


def base_url() -> str:
    """The Policy Decision Point identifier: PROVISIONING_PUBLIC_URL, or this request's."""
    settings = current_app.extensions["provisioning.settings"]
    return (settings.public_url or request.host_url).rstrip("/")


@access.get(METADATA)
def metadata() -> Response:
    """Policy Decision Point metadata (AuthZEN 1.0 section 9)."""
    base = base_url()
    body = {"policy_decision_point": base}
    body.update({name: base + path for name, path in ENDPOINTS.items()})
    return _json(body)
