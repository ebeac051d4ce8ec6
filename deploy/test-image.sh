#!/usr/bin/env bash
# Build the image from deploy/Dockerfile and run it here, against the local PostgreSQL:
# `db upgrade`, then `serve` (gunicorn), /healthz and /readyz, a demo seed, a token and
# a decision over HTTP. Image registries cannot be reached from these machines, so the
# base image is built from Debian's packages (mmdebstrap: python3, venv) and passed as
# BASE_IMAGE; buildah builds and runs with chroot isolation (podman's `run` fails on
# these machines' cgroups). The chroot shares the host's network: the server inside
# answers on 127.0.0.1.
#
#   bash deploy/test-image.sh            # by hand or from .ci/run
#   KEEP=1 bash deploy/test-image.sh     # keep the service's image afterwards
#
# Installs buildah and mmdebstrap with apt-get where they are missing, and fails (never
# skips) where they cannot be had: `.ci/run` runs it after the test suites. It relies on
# nothing outside the clone but the local PostgreSQL and the Debian base image, which it
# builds itself when buildah's store lacks it (kept afterwards: the next run reuses it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v buildah >/dev/null || ! command -v mmdebstrap >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing buildah and mmdebstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah mmdebstrap >/dev/null
  fi
fi
if ! command -v buildah >/dev/null || ! command -v mmdebstrap >/dev/null; then
  echo "FAIL deploy/test-image.sh: buildah and mmdebstrap are missing and cannot be installed" >&2
  exit 1
fi

work=$(mktemp -d)
base=localhost/debian-py:bookworm
# Names of this run's own, so that two runs on one machine (CI and a developer) do not meet.
image=localhost/connector-provisioning:test-$$
port=${PORT:-$((18000 + $$ % 1000))}
db=provisioning_image_test_$$
server_pid=
ctr=
stop_server() {
  # The chroot shares the host's process table: gunicorn's pid file names a host pid.
  local master
  master=$(buildah run --isolation chroot "$ctr" cat /tmp/gunicorn.pid 2>/dev/null || true)
  if [ -n "$master" ]; then
    kill -TERM "$master" 2>/dev/null || true
    for _ in $(seq 1 120); do kill -0 "$master" 2>/dev/null || break; sleep 0.5; done
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}
cleanup() {
  [ -n "$server_pid" ] && stop_server
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1
  # The base image is kept (built again only when missing); the service's unless KEEP=1.
  if [ -z "${KEEP:-}" ]; then buildah rmi "$image" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
step() { echo "== $* ($(date +%T))"; }

step "base image from Debian packages"
if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$work/rootfs.tar" http://deb.debian.org/debian </dev/null
  ctr=$(buildah from scratch)
  buildah add "$ctr" "$work/rootfs.tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  buildah commit --quiet "$ctr" "$base" >/dev/null
  buildah rm "$ctr" >/dev/null
  ctr=
fi

# pip inside the build trusts what the host trusts (here PyPI is reached through a proxy
# with its own certificate authority, installed in the host's bundle).
build_volumes=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$work/host-ca.crt"
  printf '[global]\ncert = /etc/ssl/host-ca.crt\n' >"$work/pip.conf"
  build_volumes=(--volume "$work/host-ca.crt:/etc/ssl/host-ca.crt:ro"
                 --volume "$work/pip.conf:/etc/pip.conf:ro")
fi

step "buildah build (BASE_IMAGE=$base)"
started=$(date +%s)
buildah build --quiet --isolation chroot --format docker --layers=false "${build_volumes[@]}" \
  --build-arg BASE_IMAGE="$base" -f deploy/Dockerfile -t "$image" . >/dev/null
echo "built in $(( $(date +%s) - started )) s; $(buildah images --format '{{.Size}}' "$image")"
buildah inspect --type image --format '{{.Docker.Config.Healthcheck.Test}}' "$image" | grep -q healthz

step "the final image holds no compiler, no pip, no source tree"
ctr=$(buildah from "$image")
mnt_check='for p in /usr/bin/gcc /usr/bin/cc /opt/venv/bin/pip /src /root/.cache/pip; do
  [ -e "$p" ] && { echo "found $p"; exit 1; }; done; id -u'
uid=$(buildah run --isolation chroot "$ctr" /bin/sh -c "$mnt_check")
[ "$uid" = 10001 ] || { echo "runs as uid $uid, not 10001"; exit 1; }

step "database $db on the local PostgreSQL"
pg="postgresql://postgres@127.0.0.1:5432"
psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
run() {
  buildah run --isolation chroot --env DATABASE_URL="$pg/$db" \
    --env PROVISIONING_BIND="127.0.0.1:$port" --env WEB_CONCURRENCY=2 \
    "$ctr" /bin/sh /usr/local/bin/provisioning-entrypoint "$@"
}

step "db upgrade"
run db upgrade

step "serve"
run serve --pid /tmp/gunicorn.pid >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/healthz"; echo
curl -fsS "http://127.0.0.1:$port/readyz"; echo

step "demo seed, a token, a decision"
run demo | tail -3
token=$(run token create --name image-test --scope decisions:check)
person=$(psql -qtA "$pg/$db" -c "SELECT user_name FROM users ORDER BY user_name LIMIT 1")
connector=$(psql -qtA "$pg/$db" -c "SELECT slug FROM connectors ORDER BY slug LIMIT 1")
answer=$(curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -H 'X-Request-ID: image-test-1' \
  -d "{\"user\": \"$person\", \"connector\": \"$connector\", \"action\": \"read\", \"interface\": \"code\"}" \
  "http://127.0.0.1:$port/api/v1/decisions")
echo "decision for $person on $connector: $answer"
echo "$answer" | grep -q '"decision"'

step "the log is JSON lines with the request id, and holds no token"
grep -q '"request_id": "image-test-1"' "$work/serve.log"
if grep -q "$token" "$work/serve.log"; then echo "the token is in the log"; exit 1; fi
python3 -c "import json,sys; [json.loads(l) for l in open(sys.argv[1]) if l.strip()]" "$work/serve.log"

step "SIGTERM: gunicorn stops"
stop_server
psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
echo "image test passed${KEEP:+; kept $image}"
