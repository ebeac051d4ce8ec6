"""CPU per SCIM user create, in process: ours (SQLite file) against scim2-server's reference.

Each application is called directly as a WSGI app (no server, no network), with the
request shape bench/scim_compare.py's wrk script sends (a new userName each time).
Reports, for each of ``--runs`` runs of ``--requests`` creates, the CPU per request
(``time.process_time``) and, for ours, the time the writers' lock was held per create.
The minimum over the runs is the figure to read: the host's noise only ever adds.

    .venv/bin/python bench/scim_create_cpu.py [--runs 7] [--requests 1000] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import itertools
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

from werkzeug.test import EnvironBuilder, run_wsgi_app

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_tags = itertools.count()


def body(n: int, tag: str, external_id: bool) -> bytes:
    name = f"new-{tag}-{n}@example.com"
    document = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "New", "familyName": "User"},
        "active": True,
        "emails": [{"value": name, "type": "work"}],
    }
    if external_id:
        document["externalId"] = f"00u{tag}x{n}"
    return json.dumps(document, separators=(",", ":")).encode()


def environs(secret: str, prefix: str, count: int, external_id: bool) -> list[dict]:
    tag = f"{time.time_ns()}{next(_tags)}"
    return [
        EnvironBuilder(
            path=f"{prefix}/v2/Users",
            method="POST",
            data=body(n, tag, external_id),
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/scim+json"},
        ).get_environ()
        for n in range(count)
    ]


def run(app, environ_list: list[dict]) -> float:
    """CPU seconds per request; every answer must be 201."""
    start = time.process_time()
    for environ in environ_list:
        iterable, status, _headers = run_wsgi_app(app, environ)
        b"".join(iterable)
        if not status.startswith("201"):
            raise SystemExit(f"unexpected answer {status}")
    return (time.process_time() - start) / len(environ_list)


class Held:
    """Wraps the writers' lock: how long it is held, in total, and how many times."""

    def __init__(self, lock) -> None:
        self.lock = lock
        self.total = 0.0
        self.count = 0
        self._since = 0.0

    def __enter__(self):
        self.lock.__enter__()
        self._since = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.total += time.perf_counter() - self._since
        self.count += 1
        return self.lock.__exit__(*exc)


def ours(workdir: Path):
    from provisioning.audit.log import Origin, Source
    from provisioning.database import Database
    from provisioning.settings import load
    from provisioning.tokens import credentials
    from provisioning.web.app import create_app

    database = Database(f"sqlite:///{workdir / 'create.db'}")
    database.upgrade()
    with database.transaction() as session:
        secret = credentials.create(
            session, "bench", ["scim:provision"], Origin("bench", Source.CLI)
        )
    app = create_app(load(database_url=database.url), database)
    held = Held(database._writers)
    database._writers = held
    return app, secret, held


def reference(secret: str):
    from scim2_server.memory import InMemoryStorage
    from scim2_server.testserver.application import BEARER_TOKEN_SCHEME, BearerTokenApplication
    from scim2_server.utils import load_default_provider

    provider = load_default_provider()
    provider.config.authentication_schemes = [BEARER_TOKEN_SCHEME]
    return BearerTokenApplication(InMemoryStorage(), provider, bearer_tokens=[secret])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--external-id", action="store_true", help="send an externalId too")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile one run of ours")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app, secret, held = ours(Path(tmp))
        ref = None if args.no_reference else reference(secret)
        run(app, environs(secret, "/scim", 200, args.external_id))  # warm-up
        if ref is not None:
            run(ref, environs(secret, "", 200, args.external_id))
        if args.profile:
            batch = environs(secret, "/scim", args.requests, args.external_id)
            profile = cProfile.Profile()
            with contextlib.ExitStack():
                profile.enable()
                run(app, batch)
                profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(60)
            return
        mine, theirs, locked = [], [], []
        for _ in range(args.runs):
            batch = environs(secret, "/scim", args.requests, args.external_id)
            held.total, held.count = 0.0, 0
            mine.append(run(app, batch))
            locked.append(held.total / max(held.count, 1))
            if ref is not None:
                theirs.append(run(ref, environs(secret, "", args.requests, args.external_id)))

        def ms(values: list[float]) -> str:
            return " ".join(f"{v * 1000:.3f}" for v in values)

        print(f"ours      CPU ms/create: min {min(mine) * 1000:.3f}  ({ms(mine)})")
        print(f"ours      lock held ms:  min {min(locked) * 1000:.3f}  ({ms(locked)})")
        if theirs:
            print(f"reference CPU ms/create: min {min(theirs) * 1000:.3f}  ({ms(theirs)})")


if __name__ == "__main__":
    main()
