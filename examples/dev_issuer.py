"""A local development issuer, for trying the gateway on one machine and nothing else: it
serves a JWKS on 127.0.0.1 and mints RFC 9068 access tokens for whoever you name, with the
audience you name. Anyone who can read its key file can be anyone: never point a real
gateway or the service at it. The service never enables it; only you, by running this.

    .venv/bin/python examples/dev_issuer.py serve &      # JWKS on http://127.0.0.1:8099/keys
    .venv/bin/python examples/dev_issuer.py token ada.lovelace@example.com \\
        --audience http://127.0.0.1:8090/mcp              # prints a token (1 hour)

The key is kept in ./dev-issuer.jwk (made on first use, mode 0600; --key to move it).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

HOST = "127.0.0.1"


def issuer_url(port: int) -> str:
    return f"http://{HOST}:{port}"


def load_key(path: Path) -> RSAKey:
    """The issuer's signing key, made (0600) on first use."""
    if not path.exists():
        key = RSAKey.generate_key(2048, parameters={"kid": "dev-1"}, private=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(key.as_dict(private=True), file)
    return RSAKey.import_key(json.loads(path.read_text()))


def mint(key: RSAKey, person: str, audience: str, *, port: int, minutes: int = 60) -> str:
    """An access token (RFC 9068) naming ``person`` in ``sub``, for ``audience``."""
    now = int(time.time())
    claims = {
        "iss": issuer_url(port),
        "aud": audience,
        "sub": person,
        "client_id": "example-client",
        "iat": now,
        "exp": now + minutes * 60,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": key.kid}, claims, key)


def jwks_server(key: RSAKey, port: int) -> ThreadingHTTPServer:
    """The public key at ``/keys`` on 127.0.0.1 (port 0: any free one), not yet serving."""
    body = json.dumps({"keys": [key.as_dict(private=False)]}).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/keys"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if found else 0))
            self.end_headers()
            if found:
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return ThreadingHTTPServer((HOST, port), Keys)


def start(key: RSAKey, port: int = 0) -> ThreadingHTTPServer:
    """:func:`jwks_server`, serving in a thread (``shutdown()`` to stop it)."""
    server = jwks_server(key, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", type=Path, default=Path("dev-issuer.jwk"))
    parser.add_argument("--port", type=int, default=8099)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the JWKS on 127.0.0.1")
    token = commands.add_parser("token", help="print an access token")
    token.add_argument("person", help="the sub claim: the person's userName or email")
    token.add_argument("--audience", required=True, help="the connector's resource URI")
    token.add_argument("--minutes", type=int, default=60)
    args = parser.parse_args()
    key = load_key(args.key)
    if args.command == "token":
        print(mint(key, args.person, args.audience, port=args.port, minutes=args.minutes))
        return
    print(f"issuer {issuer_url(args.port)}, JWKS {issuer_url(args.port)}/keys", flush=True)
    jwks_server(key, args.port).serve_forever()


if __name__ == "__main__":
    main()
