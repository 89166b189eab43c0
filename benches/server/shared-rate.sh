#!/usr/bin/env bash
# Archiving rate of the shared backend (PostgreSQL + Garage S3) against the embedded one
# (SQLite + files), in one run on one host: N messages of 20 KB sent by Postfix's
# smtp-source over 20 sessions to one journal-server, timed from the first connection until
# every item is settled in the archive; then the same against two receivers on one shared
# archive (half the messages to each). Prints messages archived per second for each and the
# ratios.
#
# Usage (from the project root; smtp-source from the postfix package; the shared backend
# started: bash .ci/shared-backend.sh start):
#   benches/server/shared-rate.sh [--messages N] BINARY
set -euo pipefail
N=3000
while [ $# -gt 1 ]; do
  case "$1" in
    --messages) N=$2; shift 2 ;;
    *) break ;;
  esac
done
BIN=$(realpath "$1")
STATE="${MAILJOURNAL_SHARED_STATE:-/tmp/mailjournal-shared}"
# shellcheck disable=SC1091
. "$STATE/env"
mkdir -p target
WORK=$(mktemp -d "$PWD/target/shared-rate.XXXXXX")
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT
psql_q() { "$MAILJOURNAL_SHARED_PG_BIN/psql" "$MAILJOURNAL_TEST_POSTGRES_URL" -At -c "$1"; }

# config NAME PORT BACKEND: writes $WORK/NAME.toml
config() {
  local archive=""
  if [ "$3" = shared ]; then
    archive="[archive]
backend = \"shared\"
node_name = \"bench-$1-$$\"
postgres_url = \"$MAILJOURNAL_TEST_POSTGRES_URL\"
s3_endpoint = \"$MAILJOURNAL_TEST_S3_ENDPOINT\"
s3_region = \"$MAILJOURNAL_TEST_S3_REGION\"
s3_bucket = \"$MAILJOURNAL_TEST_S3_BUCKET\""
  fi
  cat > "$WORK/$1.toml" <<TOML
[server]
listen = ["127.0.0.1:$2"]
hostname = "bench.journal.example.com"
data_dir = "$WORK/$1"
[[internal_domain]]
name = "example.com"
[[internal_domain]]
name = "journal.example.com"
[[journal]]
description = "bench"
service_email_address = "journaling@journal.example.com"
additional_source_ip_ranges = ["127.0.0.0/8"]
encrypted = false
journal_type = "eml"
$archive
TOML
}

start() { # NAME PORT
  "$BIN" serve --config "$WORK/$1.toml" --match-interval-seconds 1 >"$WORK/$1.out" 2>"$WORK/$1.err" &
  PIDS+=($!)
  for _ in $(seq 1 100); do grep -q "listening on" "$WORK/$1.out" && return; sleep 0.1; done
  echo "$1 did not start"; cat "$WORK/$1.err"; exit 1
}

embedded_settled() { "$BIN" status --data-dir "$WORK/$1" --json --limit 1 | python3 -c \
  'import json,sys; c=json.load(sys.stdin)["queue"]["counts"]; print(sum(c.get(s,0) for s in ("archived","merged","not_archived","failed","expired")))'; }
shared_settled() { psql_q "SELECT count(*) FROM items WHERE node LIKE 'bench-%-$$' AND state IN ('archived','merged','not_archived','failed','expired')"; }

# run LABEL COUNTER PORT...: sends N messages split over the ports, waits until COUNTER says N.
run() {
  local label=$1 counter=$2; shift 2
  local per=$((N / $#)) t0 t1 senders=()
  t0=$(date +%s.%N)
  for port in "$@"; do
    smtp-source -s $((20 / $#)) -m "$per" -l 20480 -f bench@example.org \
      -t journaling@journal.example.com "127.0.0.1:$port" >/dev/null &
    senders+=($!)
  done
  wait "${senders[@]}"
  until [ "$($counter)" -ge "$N" ]; do sleep 0.2; done
  t1=$(date +%s.%N)
  python3 -c "print(f'$label: {$N / ($t1 - $t0):.0f} archived/s ({$t1 - $t0:.1f} s for $N)')"
}

config embedded 25281 embedded; start embedded 25281
run embedded "embedded_settled embedded" 25281 | tee "$WORK/e.rate"; E=$(cat "$WORK/e.rate")
config one 25282 shared; start one 25282
run "shared, one node" shared_settled 25282 | tee "$WORK/s1.rate"; S1=$(cat "$WORK/s1.rate")
BEFORE=$(shared_settled)
config two 25283 shared; start two 25283
shared_two() { echo $(( $(shared_settled) - BEFORE )); }
run "shared, two nodes" shared_two 25282 25283 | tee "$WORK/s2.rate"; S2=$(cat "$WORK/s2.rate")
rate() { echo "$1" | sed -E 's/.*: ([0-9]+) archived.*/\1/'; }
python3 - "$(rate "$E")" "$(rate "$S1")" "$(rate "$S2")" <<'PY'
import sys
e, s1, s2 = map(float, sys.argv[1:])
print(f"shared-1/embedded: {s1 / e:.2f}")
print(f"shared-2/shared-1: {s2 / s1:.2f}")
PY
