"""/api/v1/decisions: may this user call this action of this connector from this interface?"""

from __future__ import annotations

from flask import Response, current_app

from provisioning.api import schemas
from provisioning.api.edge import database, json_response, route
from provisioning.entitlements import decisions
from provisioning.tokens.credentials import Scope

CHECK = Scope.DECISIONS_CHECK.value
TAG = "decisions"


def _recorder() -> decisions.LastUseRecorder:
    return current_app.extensions["provisioning.api.last_use"]


def _decide(checks: list[schemas.DecisionIn]) -> list[schemas.DecisionOut]:
    recorder = _recorder()
    questions = [decisions.Question(c.user, c.connector, c.action, c.interface) for c in checks]
    if len(questions) == 1:  # a point lookup
        answers = database().hot_read(lambda connection: [decisions.decide(connection, *questions)])
    else:  # set-wise reads, planned for their parameters (Database.hot_reader)
        with database().hot_reader() as connection:
            answers = decisions.decide_many(connection, questions)
    out = []
    for answer in answers:
        if answer.grant_id is not None:
            recorder.used(answer.grant_id, recorded=answer.last_used_at)
        out.append(schemas.DecisionOut(decision=answer.decision, reasons=list(answer.reasons)))
    return out


@route(
    "POST",
    "/decisions",
    CHECK,
    tag=TAG,
    ok={200: schemas.DecisionOut},
    summary="Decide one call: allow, needs_approval, blocked or deny, with reasons",
)
def decide(body: schemas.DecisionIn) -> Response:
    return json_response(_decide([body])[0])


@route(
    "POST",
    "/decisions/batch",
    CHECK,
    tag=TAG,
    ok={200: schemas.DecisionBatchOut},
    summary="Decide up to 100 calls at once, answered in order",
)
def decide_batch(body: schemas.DecisionBatchIn) -> Response:
    return json_response(schemas.DecisionBatchOut(results=_decide(body.checks)))
