"""Adding people set-wise refuses exactly what adding them one by one refuses."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from provisioning import text
from provisioning.identity.models import User
from provisioning.people import lifecycle

# Names that fold alike (case, compatibility forms, ß/ss), one too long once folded, and
# ones the character rule refuses; beside them, any text.
NAMES = st.one_of(
    st.sampled_from(
        ["ada", "ADA", "Ada", "Straße", "STRASSE", "strasse", "ﬀ", "FF", "İ" * 130, "a\x00b"]
    ),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=6),
)
PEOPLE = st.lists(st.tuples(NAMES, st.sampled_from([None, "00u0", "00u1", "00u2"])), max_size=12)


class _Undo(Exception):
    """Raised to roll an example's transaction back."""


def _outcomes(database, origin, people, *, batch: bool):
    """What adding ``people`` does: for each, its row or why it was refused; rolled back."""
    outcomes: list = []
    try:
        with database.transaction() as session:
            news = []
            for user_name, external_id in people:
                try:
                    news.append(lifecycle.new_user(user_name=user_name, external_id=external_id))
                except (text.TextError, lifecycle.IdentityError) as exc:
                    news.append(f"refused: {exc}")
            valid = [n for n in news if not isinstance(n, str)]
            if batch:
                added = iter(lifecycle.add_users(session, origin, valid))
            else:
                added = iter([])
                results = []
                for new in valid:
                    try:
                        results.append(lifecycle.add_user(session, origin, new).id)
                    except lifecycle.IdentityError as exc:
                        results.append(exc)
                added = iter(results)
            for new in news:
                result = new if isinstance(new, str) else next(added)
                if isinstance(result, Exception):
                    outcomes.append(f"refused: {result}")
                elif isinstance(result, str):
                    outcomes.append(result)
                else:
                    user = session.get(User, result)
                    outcomes.append((user.user_name, user.user_name_key, user.external_id))
            raise _Undo
    except _Undo:
        pass
    return outcomes


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(people=PEOPLE)
def test_a_batch_refuses_what_one_by_one_refuses(database, origin, people):
    with database.reader() as session:
        held = session.scalar(select(User).where(User.external_id == "00u0"))
    if held is None:  # one live user for every example: "ada", Okta id 00u0
        with database.transaction() as session:
            lifecycle.create_user(session, origin, user_name="ada", external_id="00u0")
    one_by_one = _outcomes(database, origin, people, batch=False)
    assert _outcomes(database, origin, people, batch=True) == one_by_one
