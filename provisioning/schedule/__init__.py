"""The record of scheduled work: every run of a job (run by ``jobs/``, read by the admin API)."""
