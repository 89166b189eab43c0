#!/usr/bin/env bash
# Disk use under a steady load with retention: does it level off at what the retention
# periods imply? Runs journal-server with days shortened (--retention-day-seconds, hidden),
# retention_days = 3 and as_received_days = 1, sends RATE messages of 20 KB a second with
# Postfix's smtp-source for DURATION seconds, and prints the data directory's size every
# 10 seconds, split into spool (live, kept) and archive (index, content).
#
# Usage (from the project root; needs smtp-source from the postfix package):
#   benches/server/retention-level.sh [--day SECONDS] [--rate N] [--duration SECONDS] BINARY
set -euo pipefail
DAY=10 RATE=100 DURATION=240
while [ $# -gt 1 ]; do
  case "$1" in
    --day) DAY=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    *) break ;;
  esac
done
BIN=$(realpath "$1")
PORT=25271
mkdir -p target
WORK=$(mktemp -d "$PWD/target/retention.XXXXXX")
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
cat > "$WORK/journal.toml" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
hostname = "bench.journal.example.com"
data_dir = "$WORK/data"
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
retention_days = 3
[retention]
as_received_days = 1
TOML
"$BIN" serve --config "$WORK/journal.toml" --match-interval-seconds 1 \
  --retention-day-seconds "$DAY" --spool-segment-bytes 1048576 >"$WORK/out.log" 2>"$WORK/err.log" &
SERVER=$!
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/out.log" && break; sleep 0.1; done
size() { du -sb "$1" 2>/dev/null | cut -f1; }
mb() { python3 -c "print(f'{$1 / 1e6:.1f}')"; }
echo "one retention day lasts ${DAY} s: messages kept $((3 * DAY)) s, as-received copies $((DAY)) s after retirement"
echo "load: $RATE messages of 20 KB a second for $DURATION s"
printf '%6s %10s %10s %10s %10s %10s\n' "t (s)" "total MB" "live MB" "kept MB" "index MB" "content MB"
START=$(date +%s)
NEXT=$START
while [ $(( $(date +%s) - START )) -lt "$DURATION" ]; do
  # One second's messages, then the rest of the second idle: a steady rate, not a flood.
  smtp-source -s 4 -m "$RATE" -l 20480 -f bench@example.org -t journaling@journal.example.com \
    "127.0.0.1:$PORT" >/dev/null
  NOW=$(date +%s)
  if [ "$NOW" -ge "$NEXT" ]; then
    D="$WORK/data"
    printf '%6s %10s %10s %10s %10s %10s\n' $((NOW - START)) "$(mb "$(size "$D")")" \
      "$(mb "$(( $(size "$D/spool/log") + $(size "$D/spool/data") ))")" "$(mb "$(size "$D/spool/kept")")" \
      "$(mb "$(( $(size "$D/archive.sqlite3") + $(size "$D/archive.sqlite3-wal" || echo 0) ))")" \
      "$(mb "$(size "$D/archive")")"
    NEXT=$((NEXT + 10))
  fi
  sleep 0.5
done
"$BIN" status --data-dir "$WORK/data" --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("retention:", s["retention"], "counts:", s["queue"]["counts"])'
