"""Oversight: findings about access that should not exist, and the record of every job run."""
