"""SCIM filters run as SQL keep exactly what scim2-models' own evaluator keeps, on random
Unicode data, on SQLite and PostgreSQL alike.

The evaluator (``ScimFilter.match``) runs under the service's comparison key
(``ScimPolicy(comparison_key=scim.resources.comparison_key)``: provisioning.text.fold
unless caseExact), over the resources the service returns. Budget: CROSSCHECK_EXAMPLES
data sets (default 12) of FILTERS_PER_SET filters each (30), for Users and Groups;
EDGE_FUZZ_REPORT appends the case count.
"""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scim2_models import Group as GroupResource
from scim2_models import ScimFilter, ScimPolicy

from provisioning import text
from scim.resources import UserResource, comparison_key
from tests.conftest import ON_POSTGRES
from tests.scim.conftest import GROUP_SCHEMA, Scim, make_app, make_token, okta_user

EXAMPLES = int(os.environ.get("CROSSCHECK_EXAMPLES", 12))
FILTERS_PER_SET = 30

# Characters whose case or compatibility forms are where databases and Python part ways.
TRICKY = [
    *'aAbBsSiI_%\\" .@-',
    *"\u00df\u1e9e\u03c3\u03c2\u03a3\u0130\u0131\u00c4\u00e4\u00c5\u00e5\ufb01\uff21\uff41\u212a",
    "\u0301",
    "e\u0301",
    "\u00e9",
    "\U0010ffff",
    "\U0001f600",
]
letters = st.sampled_from(TRICKY) | st.characters(exclude_categories=("Cc", "Cs"))
unicode_text = st.lists(letters, min_size=1, max_size=6).map("".join)
# Attributes kept in the JSON document are folded by lower(normalize(NFKC)) on PostgreSQL,
# which differs from str.casefold for characters with a full case folding: their data
# come from letters where the two agree (see README, Hostile input).
plain_text = st.text(
    alphabet="aAbB\u00c4\u00e4\u00c5\u00e5\u00c9\u00e9_%. @-", min_size=1, max_size=6
)
addresses = st.builds(
    "{}@{}.example".format,
    st.text(alphabet="aAbB\u00c4\u00e4\u00c9\u00e9", min_size=1, max_size=4),
    st.sampled_from(["Mail", "mail", "M\u00c4IL"]),
)

USER_ATTRIBUTES = {
    "userName": unicode_text,
    "displayName": unicode_text,
    "name.givenName": unicode_text,
    "name.familyName": unicode_text,
    "externalId": unicode_text,  # caseExact
    "title": plain_text,
    "emails.value": addresses,
    'emails[type eq "work"].value': addresses,
}
GROUP_ATTRIBUTES = {"displayName": unicode_text, "externalId": unicode_text}
OPERATORS = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"]


def variants(value: str) -> list[str]:
    """Operands near a stored value: its case variants, folded form and pieces."""
    half = len(value) // 2
    return [
        value,
        value.upper(),
        value.lower(),
        value.swapcase(),
        text.fold(value),
        value[:half],
        value[half:],
        value[1:],
    ]


@st.composite
def data_sets(draw):
    users, seen = [], set()
    for i in range(draw(st.integers(3, 7))):
        name = draw(unicode_text)
        if text.fold(name) in seen:
            continue
        seen.add(text.fold(name))
        users.append(
            {
                "userName": name,
                "displayName": draw(unicode_text),
                "name": {"givenName": draw(unicode_text), "familyName": draw(unicode_text)},
                "externalId": f"{draw(unicode_text)}{i}",
                "title": draw(plain_text),
                "emails": [
                    {"value": draw(addresses), "type": "work"},
                    {"value": draw(addresses), "type": "home", "primary": True},
                ],
            }
        )
    groups = [
        {"displayName": draw(unicode_text), "externalId": f"{draw(unicode_text)}{i}"}
        for i in range(draw(st.integers(2, 4)))
    ]
    return users, groups


def operand(draw, strategy, stored: list[str]) -> str:
    if stored and draw(st.booleans()):
        return draw(st.sampled_from(variants(draw(st.sampled_from(stored)))))
    return draw(strategy)


@st.composite
def filter_for(draw, attributes, stored):
    def comparison() -> str:
        name = draw(st.sampled_from(sorted(attributes)))
        if draw(st.integers(0, 9)) == 0:
            return f"{name} pr"
        value = operand(draw, attributes[name], stored.get(name, []))
        op = draw(st.sampled_from(OPERATORS))
        return f"{name} {op} {json.dumps(value, ensure_ascii=False)}"

    first = comparison()
    shape = draw(st.integers(0, 3))
    if shape == 0:
        return first
    second = comparison()
    if shape == 1:
        return f"{first} and {second}"
    if shape == 2:
        return f"{first} or not ({second})"
    return f"not ({first})"


def stored_values(users, groups):
    user_values = {
        "userName": [u["userName"] for u in users],
        "displayName": [u["displayName"] for u in users],
        "name.givenName": [u["name"]["givenName"] for u in users],
        "name.familyName": [u["name"]["familyName"] for u in users],
        "externalId": [u["externalId"] for u in users],
        "title": [u["title"] for u in users],
        "emails.value": [e["value"] for u in users for e in u["emails"]],
    }
    user_values['emails[type eq "work"].value'] = user_values["emails.value"]
    group_values = {
        "displayName": [g["displayName"] for g in groups],
        "externalId": [g["externalId"] for g in groups],
    }
    return user_values, group_values


def test_sql_filters_agree_with_the_reference_evaluator(fresh_database):
    cases = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=data_sets(), draw=st.data())
    def check(data, draw):
        nonlocal cases
        database = fresh_database()
        secret = make_token(database, "crosscheck", ["scim:provision"])
        scim = Scim(make_app(database).test_client(), secret, database)
        users, groups = data
        for user in users:
            body = {**okta_user("x@example.com"), **user}
            response = scim.post("/Users", body)
            assert response.status_code == 201, response.get_json()
        for group in groups:
            response = scim.post("/Groups", {"schemas": [GROUP_SCHEMA], **group})
            assert response.status_code == 201, response.get_json()
        user_values, group_values = stored_values(users, groups)
        kinds = [
            ("/Users", UserResource, USER_ATTRIBUTES, user_values),
            ("/Groups", GroupResource, GROUP_ATTRIBUTES, group_values),
        ]
        every = {}
        for path, model, _, _ in kinds:
            listed = scim.get(path, query_string={"count": "1000"}).get_json()["Resources"]
            every[path] = [model.model_validate(r) for r in listed]
        for _ in range(FILTERS_PER_SET):
            path, model, attributes, stored = draw.draw(st.sampled_from(kinds))
            scim_filter = draw.draw(filter_for(attributes, stored))
            response = scim.get(path, query_string={"filter": scim_filter, "count": "1000"})
            with ScimPolicy(comparison_key=comparison_key):
                try:
                    matcher = ScimFilter[model](scim_filter)
                    expected = sorted(r.id for r in every[path] if matcher.match(r))
                except Exception as exc:  # an operand scim2-models refuses: so must SQL
                    expected = type(exc)
            if response.status_code == 400:
                assert response.get_json()["scimType"] == "invalidFilter", scim_filter
                assert isinstance(expected, type), (scim_filter, expected)
            else:
                assert response.status_code == 200, (scim_filter, response.get_json())
                got = sorted(r["id"] for r in response.get_json().get("Resources", []))
                assert got == expected, scim_filter
            cases += 1

    check()
    line = f"scim filter cross-check on {'postgresql' if ON_POSTGRES else 'sqlite'}: "
    line += f"{cases} cases, all agreeing"
    path = os.environ.get("EDGE_FUZZ_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")
    print(line)
    assert cases >= EXAMPLES * FILTERS_PER_SET // 2
