"""Inbound webhooks: Okta event hooks at /hooks/okta/events."""
