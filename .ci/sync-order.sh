#!/usr/bin/env bash
# Power-loss ordering: runs journal-server under strace while clear-text clients send small
# messages (inline in the log, small segments so that new ones are created) and messages over
# 1 MiB (their own data files), then checks from the system calls that every "250 queued as ID"
# was sent only after the record, its segment's directory entry and any data file were synced
# (.ci/sync-order.py says exactly what is checked).
# Usage: .ci/sync-order.sh PATH_TO_journal-server
set -euo pipefail
BIN=$(realpath "$1")
HERE=$(dirname "$(realpath "$0")")
python3 "$HERE/sync-order.py" --self-test
WORK=$(mktemp -d)
PORT=$((27000 + RANDOM % 1000))
# PID is strace's; the server is its child, and strace ends when the server does.
stop() { pkill -TERM -P "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=; }
cleanup() { [ -n "${PID:-}" ] && stop; [ -z "${KEEP:-}" ] && rm -rf "$WORK"; true; }
trap cleanup EXIT

cat > "$WORK/journal.toml" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
hostname = "mx.journal.example.com"
data_dir = "$WORK/data"

[[internal_domain]]
name = "example.com"

[[internal_domain]]
name = "journal.example.com"

[[journal]]
description = "sync order"
service_email_address = "journaling@journal.example.com"
additional_source_ip_ranges = ["127.0.0.0/8"]
encrypted = false
journal_type = "eml"
TOML

# Starts the server under strace, tracing to $1.
traced() {
  : >"$WORK/out.log"
  strace -f -qq -s 256 -o "$1" \
    -e trace=openat,close,write,writev,pwrite64,fsync,fdatasync,syncfs,sendto,rename,renameat,renameat2 \
    "$BIN" serve --config "$WORK/journal.toml" --spool-segment-bytes 65536 \
    --match-interval-seconds 1 >"$WORK/out.log" 2>>"$WORK/err.log" &
  PID=$!
  for _ in $(seq 1 300); do grep -q "listening on" "$WORK/out.log" 2>/dev/null && break; sleep 0.1; done
  grep -q "listening on" "$WORK/out.log"
}

# 1. Acceptance: small and large messages.
traced "$WORK/accept.trace"
python3 - "$PORT" <<'PY' &
import smtplib, sys
body = "From: big@example.com\r\nTo: bob@example.com\r\nSubject: large\r\n\r\n" + ("x" * 998 + "\r\n") * 1600
for n in range(4):
    with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60) as s:
        s.sendmail("big@example.com", ["journaling@journal.example.com"], body)
PY
LARGE=$!
smtp-source -s 8 -m 300 -l 3000 -f bench@example.org -t journaling@journal.example.com "127.0.0.1:$PORT"
wait "$LARGE"
# Let every item settle (three match attempts a second apart), so that the sealed segments
# can retire.
for _ in $(seq 1 60); do
  "$BIN" status --data-dir "$WORK/data" --json | python3 -c '
import json, sys
counts = json.load(sys.stdin)["queue"]["counts"]
sys.exit(0 if set(counts) <= {"archived", "merged", "not_archived"} else 1)' && break
  sleep 0.5
done
stop

# 2. Retirement: a new start retires every sealed segment whose items all settled.
traced "$WORK/retire.trace"
for _ in $(seq 1 100); do grep -q "spool segment retired" "$WORK/err.log" && break; sleep 0.1; done
stop
# smtp-source's 300 and the 4 large ones: every message sent must have been acknowledged.
python3 "$HERE/sync-order.py" --expect 304 "$WORK/accept.trace" "$WORK/retire.trace"
