"""The test issuer of the API tests (RSA keys, JWKS served on 127.0.0.1)."""

from tests.api.conftest import issuer  # noqa: F401
