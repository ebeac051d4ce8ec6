"""Connector access provisioning: IdP groups to AI-assistant connector entitlements.

``provisioning.create_app`` builds the Flask application. It is imported
lazily so that the domain packages can be used without loading Flask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provisioning.web.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from provisioning.web.app import create_app

        return create_app
    raise AttributeError(f"module 'provisioning' has no attribute {name!r}")
