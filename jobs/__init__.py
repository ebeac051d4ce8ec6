"""Scheduled and background jobs over the provisioning domain."""
