#!/bin/sh
# The image's commands: serve (gunicorn with deploy/gunicorn.conf.py: stateless web
# replicas), worker (outbox delivery; the schedule when it leads), db upgrade, or any
# other `provisioning` subcommand. exec: the command is PID 1 and gets SIGTERM itself.
set -eu
command="${1:-serve}"
case "$command" in
  serve)
    shift || true
    exec gunicorn -c /etc/provisioning/gunicorn.conf.py "$@"
    ;;
  worker | db | token | audit | jobs | okta | reconcile | demo | --help | --version)
    exec provisioning "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
