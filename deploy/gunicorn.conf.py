"""gunicorn settings for production: stateless web replicas in front of PostgreSQL.

Run ``provisioning db upgrade`` once per release before starting replicas;
``/readyz`` answers 503 until the schema is at head. Override any setting
with gunicorn's own ``GUNICORN_CMD_ARGS`` (e.g. ``--bind 0.0.0.0:9000``).
"""

import multiprocessing
import os

from provisioning.logs import gunicorn_config

wsgi_app = "provisioning:create_app()"
bind = os.environ.get("PROVISIONING_BIND", "0.0.0.0:8000")
# A request is mostly Python on the CPU with short waits on the database, which the
# threads cover: one worker per core and one more, not gunicorn's 2 x cores + 1 for
# blocking workers (on 2 cores, 3 workers served 10-20% more decisions than 5).
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() + 1))
worker_class = "gthread"
threads = 4
# Each worker listens on its own socket and the kernel spreads new connections over
# them. On one shared socket the worker that wakes first takes a burst of new keep-alive
# connections (a gateway's pool opening at once), and one core serves them all: 760
# against 2,100 decisions/s in a measured run. The price: connections still queued on
# a worker when it is recycled are reset, and the client connects again.
reuse_port = True
timeout = 30
# SIGTERM: the workers stop accepting and finish the requests under way, for up to this
# long (Kubernetes' terminationGracePeriodSeconds is longer: deploy/kubernetes/).
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then so that slow leaks cannot accumulate. Not often: a
# fresh worker builds the app and its connections, and the requests queued behind
# that are the slowest of their minute (every 10,000 requests, it showed in p99s).
max_requests = 100_000
max_requests_jitter = 10_000
# One JSON line per request comes from the service itself (provisioning.requests: route,
# status, duration, actor, request id), so gunicorn's access log is off; its own lines
# and the service's go through one handler (provisioning/logs.py), as JSON lines.
accesslog = None
errorlog = "-"
logconfig_dict = gunicorn_config(
    os.environ.get("PROVISIONING_LOG_LEVEL", "INFO").upper(),
    os.environ.get("PROVISIONING_LOG_FORMAT", "auto").lower(),
)
# Should an access log be turned on (--access-logfile), its request lines hold no
# credentials (query values of access_token, token, key, secret, password, code).
logger_class = "provisioning.web.logs.AccessLogger"
# Request lines and headers: refuse what no legitimate client sends.
limit_request_line = 8190
limit_request_fields = 100
