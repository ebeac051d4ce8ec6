"""Telling downstream targets about grants and revocations: targets, the outbox, its delivery."""
