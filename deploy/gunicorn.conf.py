"""gunicorn settings for production: stateless web replicas in front of PostgreSQL.

Run ``provisioning db upgrade`` once per release before starting replicas;
``/readyz`` answers 503 until the schema is at head. Override any setting
with gunicorn's own ``GUNICORN_CMD_ARGS`` (e.g. ``--bind 0.0.0.0:9000``).
"""

import multiprocessing
import os

wsgi_app = "provisioning:create_app()"
bind = os.environ.get("PROVISIONING_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
worker_class = "gthread"
threads = 4
timeout = 30
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then so that slow leaks cannot accumulate. Not often: a
# fresh worker builds the app and its connections, and the requests queued behind
# that are the slowest of their minute (every 10,000 requests, it showed in p99s).
max_requests = 100_000
max_requests_jitter = 10_000
accesslog = "-"
errorlog = "-"
# Request lines and headers: refuse what no legitimate client sends.
limit_request_line = 8190
limit_request_fields = 100
