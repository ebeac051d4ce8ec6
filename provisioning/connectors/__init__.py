"""Connectors and their actions: what can be granted, and the organisation policy of each action."""
