"""Who is using the console: sign-in (static API token, or OpenID Connect with PKCE),
the person's role, signed-cookie sessions, CSRF tokens, and the role each route needs.

A person signs in either with a static API token (``provisioning token create``; a
local install without an IdP) or through the configured IdP (authorization code flow
with PKCE, authlib's Flask client). Either way they resolve to a name (the directory
user's userName: the IdP's subject, or the person the token is bound to; else the
token's name) and a role: the highest of admin, reviewer and viewer whose configured
IdP groups or token scopes they carry (``PROVISIONING_CONSOLE_ADMIN`` and so on), or
requester (the requests pages only). Every change they make is audited with that name as
actor; signing in is audited too.
"""

from __future__ import annotations

import enum
import functools
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from authlib.common.errors import AuthlibBaseError
from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer
from joserfc.errors import JoseError
from werkzeug.wrappers import Response

from provisioning.audit.log import Entry, Origin, Source, record
from provisioning.database import Database
from provisioning.identity.models import User
from provisioning.offboarding.requests import OffboardingError, find_person
from provisioning.settings import Settings
from provisioning.tokens import credentials
from provisioning.tokens.secrets import CONSOLE_SESSIONS, shared

PREFIX = "/console"
console = Blueprint(
    "console",
    __name__,
    url_prefix=PREFIX,
    template_folder="templates",
    static_folder="static",
)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


class Role(enum.IntEnum):
    """Console roles, each allowed what the ones below it are. A requester sees only the
    requests pages (their own requests and what awaits their decision)."""

    REQUESTER = 0
    VIEWER = 1
    REVIEWER = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


def role_of(settings: Settings, held: Iterable[str]) -> Role | None:
    """The highest role one of whose configured groups or scopes is among ``held``."""
    names = set(held)
    for role, configured in (
        (Role.ADMIN, settings.console_admin),
        (Role.REVIEWER, settings.console_reviewer),
        (Role.VIEWER, settings.console_viewer),
        (Role.REQUESTER, settings.console_requester),
    ):
        if names & {item.strip() for item in configured.split(",") if item.strip()}:
            return role
    return None


@dataclass(frozen=True)
class Person:
    """The signed-in person, as the session holds them."""

    name: str
    role: Role
    via: str  # "token" or "oidc"
    user_id: str | None

    @property
    def origin(self) -> Origin:
        return Origin(actor=self.name, source=Source.ADMIN)

    def may(self, role: Role) -> bool:
        return self.role >= role


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed cookie sessions, for /console only, with the console's key.

    The key is ``PROVISIONING_CONSOLE_SECRET_KEY``, else a random one made once and kept
    in the database (every replica reads the same). Requests outside /console get no
    session at all (no cookie, no key read).
    """

    def __init__(self, settings: Settings, database: Database) -> None:
        self._configured = settings.console_secret_key
        self._database = database
        self._key: str | None = None

    def _secret(self) -> str:
        if self._key is None:
            self._key = self._configured or shared(self._database, CONSOLE_SESSIONS)
        return self._key

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(
            self._secret(),
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={
                "key_derivation": self.key_derivation,
                "digest_method": self.digest_method,
            },
        )

    def open_session(self, app: Flask, request: Any) -> Any:
        if not (request.path == PREFIX or request.path.startswith(PREFIX + "/")):
            return None
        return super().open_session(app, request)


def configure_oidc(app: Flask, settings: Settings) -> None:
    """Register the IdP with authlib's Flask client when an issuer is configured."""
    if not settings.console_oidc_issuer:
        return
    from authlib.integrations.flask_client import OAuth  # only with an IdP (import time)

    oauth = OAuth(app)
    client_kwargs = {"scope": "openid profile email groups", "code_challenge_method": "S256"}
    if not settings.console_oidc_client_secret:
        client_kwargs["token_endpoint_auth_method"] = "none"  # a public client: PKCE alone
    oauth.register(
        "idp",
        client_id=settings.console_oidc_client_id,
        client_secret=settings.console_oidc_client_secret,
        server_metadata_url=settings.console_oidc_issuer.rstrip("/")
        + "/.well-known/openid-configuration",
        client_kwargs=client_kwargs,
    )
    app.extensions["provisioning.console.oauth"] = oauth


def _settings() -> Settings:
    return current_app.extensions["provisioning.settings"]


def _database() -> Database:
    return current_app.extensions["provisioning.database"]


def person() -> Person | None:
    """The signed-in person, or None (no session, or one that expired)."""
    held = session.get("person")
    if not held:
        return None
    started = session.get("at", 0)
    if time.time() - started > _settings().console_session_hours * 3600:
        session.clear()
        return None
    return Person(held["name"], Role(held["role"]), held["via"], held.get("user_id"))


@console.app_template_global()
def csrf_token() -> str:
    """This session's CSRF token (made on first use), for every form."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


@console.app_template_global()
def csrf_field() -> Any:
    from markupsafe import Markup, escape

    return Markup(f'<input type="hidden" name="{CSRF_FIELD}" value="{escape(csrf_token())}">')


@console.before_request
def _check() -> Response | None:
    """Refuse a state-changing request without this session's CSRF token; load the person."""
    g.person = person()
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    expected = session.get("csrf") or ""
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return refusal(
            400,
            "This form has expired or did not come from this console",
            "Nothing was changed. Reload the page and try again.",
        )
    return None


@console.after_request
def _no_store(response: Response) -> Response:
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'",
    )
    return response


def refusal(status: int, title: str, detail: str) -> Response:
    body = render_template("refused.html", title=title, detail=detail, person=g.get("person"))
    return Response(body, status=status, mimetype="text/html")


def needs(role: Role) -> Callable:
    """The route needs a signed-in person with at least ``role``; otherwise sign in, or 403."""

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            who = g.get("person")
            if who is None:
                if request.method == "GET":
                    return redirect(url_for("console.sign_in", next=request.full_path))
                return refusal(401, "Signed out", "Your session ended: sign in again.")
            if not who.may(role):
                return refusal(
                    403,
                    "Not allowed",
                    f"This needs the {role.label} role; you are signed in as {who.role.label}.",
                )
            return view(*args, **kwargs)

        return guarded

    return decorator


def _start(name: str, role: Role, via: str, user: User | None, **how: str) -> Response:
    """Begin a fresh session for the person (a new CSRF token too), audited."""
    home = url_for("console.overview" if role >= Role.VIEWER else "console.requests")
    target = session.get("next") or home
    session.clear()
    session.permanent = True
    session["person"] = {
        "name": name,
        "role": int(role),
        "via": via,
        "user_id": str(user.id) if user else None,
    }
    session["at"] = int(time.time())
    session["csrf"] = secrets.token_urlsafe(32)
    with _database().transaction() as db:
        record(
            db,
            Origin(actor=name, source=Source.ADMIN),
            [
                Entry(
                    "console.signed_in",
                    "person",
                    name,
                    user_id=user.id if user else None,
                    after={"role": role.label, "via": via, **how},
                )
            ],
        )
    return redirect(target if _local(target) else home)


def _local(target: str) -> bool:
    return target.startswith(PREFIX + "/") and not target.startswith("//")


def _directory_user(name: str) -> User | None:
    with _database().reader() as db:
        try:
            user = find_person(db, "userName", name)
        except OffboardingError:
            return None
        db.expunge(user)
        return user


@console.get("/sign-in")
def sign_in() -> Any:
    wanted = request.args.get("next", "")
    if _local(wanted):
        session["next"] = wanted
    csrf_token()
    oidc = "provisioning.console.oauth" in current_app.extensions
    return render_template("sign_in.html", oidc=oidc, person=g.person, error=None)


@console.post("/sign-in")
def sign_in_with_token() -> Any:
    """Sign in with a static API token: the person it is bound to (``provisioning token
    create --person``) signs in, else the token itself by its name; its scopes give the
    role. A token bound to someone no longer active signs nobody in."""
    secret = (request.form.get("token") or "").strip()
    principal = None
    if secret.startswith(credentials.PREFIX):
        principal = _database().hot_read(
            lambda connection: credentials.authenticate(connection, secret)
        )
    role = role_of(_settings(), principal.scopes) if principal else None
    user, error = None, None
    if principal is None:
        error = "That token is unknown or revoked."
    elif role is None:
        error = "That token carries no scope that gives a console role."
    else:
        user, error = _bound(principal.name)
    if error is not None:
        oidc = "provisioning.console.oauth" in current_app.extensions
        body = render_template("sign_in.html", oidc=oidc, person=None, error=error)
        return Response(body, status=401, mimetype="text/html")
    assert principal is not None and role is not None
    if user is None:
        return _start(principal.name, role, "token", None)
    return _start(user.user_name, role, "token", user, token=principal.name)


def _bound(token: str) -> tuple[User | None, str | None]:
    """The person the token named ``token`` speaks for (None for a service's token), or why
    it signs nobody in."""
    with _database().reader() as db:
        if credentials.bound_person(db, token) is None:
            return None, None
        user = credentials.person_of(db, token)
        if user is None:
            return None, "That token's person is no longer an active user."
        db.expunge(user)
        return user, None


@console.get("/sign-in/oidc")
def sign_in_with_oidc() -> Any:
    oauth = current_app.extensions.get("provisioning.console.oauth")
    if oauth is None:
        abort(404)
    return oauth.idp.authorize_redirect(url_for("console.oidc_callback", _external=True))


@console.get("/sign-in/callback")
def oidc_callback() -> Any:
    """The IdP's answer: the code exchanged (with the PKCE verifier), the ID token checked."""
    oauth = current_app.extensions.get("provisioning.console.oauth")
    if oauth is None:
        abort(404)
    try:
        token = oauth.idp.authorize_access_token()
    except (AuthlibBaseError, JoseError, ValueError) as exc:
        return refusal(401, "Sign-in failed", f"The identity provider's answer was refused: {exc}")
    claims = token.get("userinfo") or {}
    held = [str(g_) for g_ in claims.get("groups") or [] if isinstance(g_, str)]
    scope = token.get("scope") or ""
    held += scope.split() if isinstance(scope, str) else []
    name = str(claims.get("preferred_username") or claims.get("email") or "")
    user = _directory_user(name) if name else None
    if user is None:
        return refusal(403, "Not in the directory", f"{name or 'This person'} is not a known user.")
    role = role_of(_settings(), held)
    if role is None:
        return refusal(403, "No console role", f"{user.user_name} has no console role.")
    return _start(user.user_name, role, "oidc", user)


@console.post("/sign-out")
def sign_out() -> Any:
    session.clear()
    return redirect(url_for("console.sign_in"))
