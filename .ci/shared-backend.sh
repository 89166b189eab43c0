#!/usr/bin/env bash
# Starts what the shared-backend tests need, on loopback with private data directories:
# PostgreSQL 15 (Debian's, as the postgres user: it refuses to run as root) and Garage (an
# S3-compatible object store, single-node layout), then writes the variables the tests read
# to $STATE/env. `stop` ends both. Used by .ci/run; by hand:
#   bash .ci/shared-backend.sh start && . /tmp/mailjournal-shared/env
#   cargo test -p mailjournal-archive --features shared -- --test-threads 2
#   bash .ci/shared-backend.sh stop
set -euo pipefail
STATE="${MAILJOURNAL_SHARED_STATE:-/tmp/mailjournal-shared}"
PG_PORT="${MAILJOURNAL_PG_PORT:-55432}"
S3_PORT="${MAILJOURNAL_S3_PORT:-53900}"
RPC_PORT=$((S3_PORT + 1))
ADMIN_PORT=$((S3_PORT + 3))

pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1; }

stop() {
  if [ -d "$STATE/pg" ]; then
    su postgres -s /bin/sh -c "$(pg_bin)/pg_ctl -D '$STATE/pg' -m fast stop" >/dev/null 2>&1 || true
  fi
  if [ -f "$STATE/garage.pid" ]; then
    kill "$(cat "$STATE/garage.pid")" 2>/dev/null || true
    rm -f "$STATE/garage.pid"
  fi
}

start() {
  stop
  rm -rf "$STATE"
  mkdir -p "$STATE"
  chmod 755 "$STATE"
  # PostgreSQL: a private cluster, trust on loopback, a `journal` role and database.
  install -d -o postgres -g postgres "$STATE/pg" "$STATE/pg-run"
  su postgres -s /bin/sh -c "$(pg_bin)/initdb -D '$STATE/pg' -A trust -U postgres" >/dev/null
  pg_start
  "$(pg_bin)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -q \
    -c "CREATE ROLE journal LOGIN PASSWORD 'journal-test-password'" \
    -c "CREATE DATABASE journal OWNER journal"

  # Garage: built once (about 13 minutes here), then reused.
  if ! command -v garage >/dev/null; then
    cargo install garage --locked --no-default-features --features bundled-libs,sqlite
  fi
  cat > "$STATE/garage.toml" <<TOML
metadata_dir = "$STATE/garage-meta"
data_dir = "$STATE/garage-data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
TOML
  s3_start
  local g=(garage -c "$STATE/garage.toml")
  for _ in $(seq 1 50); do "${g[@]}" status >/dev/null 2>&1 && break; sleep 0.2; done
  local node
  node=$("${g[@]}" node id -q | cut -d@ -f1)
  "${g[@]}" layout assign -z dc1 -c 1G "$node" >/dev/null
  "${g[@]}" layout apply --version 1 >/dev/null
  "${g[@]}" bucket create journal-archive >/dev/null
  local key
  key=$("${g[@]}" key create journal-test)
  "${g[@]}" bucket allow --read --write --owner journal-archive --key journal-test >/dev/null
  local id secret
  id=$(echo "$key" | awk '/Key ID/ {print $NF}')
  secret=$(echo "$key" | awk '/Secret key/ {print $NF}')
  cat >"$STATE/env" <<ENV
export MAILJOURNAL_TEST_POSTGRES_URL="postgres://journal:journal-test-password@127.0.0.1:$PG_PORT/journal"
export MAILJOURNAL_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
export MAILJOURNAL_TEST_S3_REGION="garage"
export MAILJOURNAL_TEST_S3_BUCKET="journal-archive"
export AWS_ACCESS_KEY_ID="$id"
export AWS_SECRET_ACCESS_KEY="$secret"
export MAILJOURNAL_SHARED_PG_BIN="$(pg_bin)"
export MAILJOURNAL_SHARED_SCRIPT="$(cd "$(dirname "$0")" && pwd)/shared-backend.sh"
export MAILJOURNAL_SHARED_STATE="$STATE"
ENV
  echo "shared backend: PostgreSQL on 127.0.0.1:$PG_PORT, Garage S3 on 127.0.0.1:$S3_PORT ($STATE/env)"
}

# An outage and its end, for the tests: PostgreSQL stopped and started again, same data.
pg_stop() { su postgres -s /bin/sh -c "$(pg_bin)/pg_ctl -D '$STATE/pg' -m fast -w stop" >/dev/null; }
pg_start() {
  su postgres -s /bin/sh -c "$(pg_bin)/pg_ctl -D '$STATE/pg' -l '$STATE/pg-run/pg.log' -w \
      -o \"-p $PG_PORT -k $STATE/pg-run -c listen_addresses=127.0.0.1\" start" >/dev/null
}

s3_start() {
  garage -c "$STATE/garage.toml" server >>"$STATE/garage.log" 2>&1 &
  echo $! >"$STATE/garage.pid"
  for _ in $(seq 1 50); do garage -c "$STATE/garage.toml" status >/dev/null 2>&1 && return; sleep 0.2; done
}
s3_stop() {
  kill "$(cat "$STATE/garage.pid")" 2>/dev/null || true
  while kill -0 "$(cat "$STATE/garage.pid")" 2>/dev/null; do sleep 0.1; done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  pg-stop) pg_stop ;;
  pg-start) pg_start ;;
  s3-stop) s3_stop ;;
  s3-start) s3_start ;;
  *) echo "usage: $0 start|stop|pg-stop|pg-start|s3-stop|s3-start" >&2; exit 2 ;;
esac
