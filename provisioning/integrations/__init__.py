"""Integrations of the service with other ecosystems' parts, kept apart from the domain."""
