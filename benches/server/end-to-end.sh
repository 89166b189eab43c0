#!/usr/bin/env bash
# End to end: what a journaling service promises is an archived item, not a 250. A sustained
# load (20 sessions of 20 KB messages, one a connection, benches/examples/smtp_load.rs) for
# SECONDS against journal-server with match attempts a second apart (three attempts, then
# archived as new), measuring from the 15th second on (after the first items have gone
# through their attempts):
#   accepted/s   messages answered 250 (mailjournal_messages_accepted_total)
#   archived/s   items settled in the archive (archived, merged, not archived: the gauges)
#   in-flow      whether sessions were ever paused because archiving fell behind (the log)
#   CPU          of the `pipeline` thread (parsing, matching, the archive store) per item
#                settled, against every other thread's (sessions, spool commits) per message
#                accepted, from /proc/PID/task/*/stat
# then how long the archive took to settle what was left when the load stopped.
#
# Usage (from the project root):
#   benches/server/end-to-end.sh [--seconds N] [--sessions N] [--size BYTES] [--server PATH]
# Ends with `archived/s: N`, `accepted/s: N`, `in-flow engaged: yes|no` and
# `archive-cpu/accept-cpu: R`.
set -euo pipefail
shopt -s inherit_errexit

SECONDS_=120 SESSIONS=20 SIZE=20480 SERVER=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_=$2; shift 2 ;;
    --sessions) SESSIONS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --server) SERVER=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
PORT=25281 ADMIN=25282
mkdir -p target
# A real disk (a tmpfs would make fsync free).
WORK=$(mktemp -d "$PWD/target/end-to-end.XXXXXX")
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

cargo build --release -q -p mailjournal-benches --example smtp_load
if [ -z "$SERVER" ]; then
  cargo build --release -q -p journal-server
  SERVER=target/release/journal-server
fi

# shellcheck source=benches/server/common.sh
. "$(dirname "$0")/common.sh"
{
  cat <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
hostname = "bench.journal.example.com"
data_dir = "$WORK/data"
max_connections = 1000

[admin]
listen = ["127.0.0.1:$ADMIN"]

EOF
  bench_domains
  bench_journal bench journaling@journal.example.com false
} > "$WORK/journal.toml"
"$SERVER" serve --config "$WORK/journal.toml" --match-interval-seconds 1 >"$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do grep -q "admin listening on" "$WORK/server.log" && break; sleep 0.1; done
grep -q "admin listening on" "$WORK/server.log" || { cat "$WORK/server.log"; exit 1; }

target/release/examples/smtp_load --port $PORT --sessions "$SESSIONS" --seconds "$SECONDS_" \
  --size "$SIZE" >"$WORK/load.out" 2>"$WORK/load.err" &
LOAD=$!

python3 - "$PID" "$ADMIN" "$SECONDS_" "$LOAD" "$WORK/server.log" <<'PY'
import os, sys, time, urllib.request
pid, admin, seconds, load, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
hz = os.sysconf("SC_CLK_TCK")
SETTLED = ("archived", "merged", "not_archived", "failed", "expired")

def threads():
    """CPU seconds per thread name of the server."""
    cpu = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except FileNotFoundError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu[name] = cpu.get(name, 0) + (int(fields[11]) + int(fields[12])) / hz
    return cpu

def sample():
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=30).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    accepted = sum(v for k, v in values.items() if k.startswith("mailjournal_messages_accepted_total"))
    settled = sum(values.get(f'mailjournal_queue_items{{state="{s}"}}', 0) for s in SETTLED)
    waiting = sum(v for k, v in values.items() if k.startswith("mailjournal_queue_items") and not any(f'"{s}"' in k for s in SETTLED))
    return time.time(), accepted, settled, waiting, values.get("mailjournal_archive_lag_seconds", 0.0), threads()

start = time.time()
time.sleep(15)
t0, acc0, set0, _, _, cpu0 = sample()
max_lag, max_waiting = 0.0, 0
while time.time() < start + seconds - 1:
    time.sleep(5)
    _, _, _, waiting, lag, _ = sample()
    max_lag, max_waiting = max(max_lag, lag), max(max_waiting, waiting)
t1, acc1, set1, waiting1, lag1, cpu1 = sample()
def running(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
while running(load):  # the load is the shell's child, not this one's
    time.sleep(0.2)
# The rest settles.
while True:
    t2, acc2, set2, waiting2, _, _ = sample()
    if waiting2 == 0 or time.time() - t1 > 300:
        break
    time.sleep(0.5)

dt = t1 - t0
accepted, settled = acc1 - acc0, set1 - set0
pipeline = cpu1.get("pipeline", 0) - cpu0.get("pipeline", 0)
rest = sum(cpu1.values()) - sum(cpu0.values()) - pipeline
archive_us, accept_us = pipeline / max(settled, 1) * 1e6, rest / max(accepted, 1) * 1e6
engaged = "archiving is behind" in open(log).read()
others = sorted(((cpu1.get(k, 0) - cpu0.get(k, 0), k) for k in cpu1 if k != "pipeline"), reverse=True)
print(f"measured {dt:.0f} s from the 15th second: {accepted:.0f} accepted, {settled:.0f} settled")
print(f"waiting at most {max_waiting:.0f}, archive lag at most {max_lag:.1f} s; at the end {waiting1:.0f} waiting, settled {t2 - t1:.1f} s after the load stopped")
print(f"pipeline thread: {pipeline:.1f} CPU s = {archive_us:.0f} us per item settled")
print(f"other threads:   {rest:.1f} CPU s = {accept_us:.0f} us per message accepted ("
      + ", ".join(f"{k} {v:.1f} s" for v, k in others[:4]) + ")")
print(f"archived/s: {settled / dt:.0f}")
print(f"accepted/s: {accepted / dt:.0f}")
print(f"in-flow engaged: {'yes' if engaged else 'no'}")
print(f"archive-cpu/accept-cpu: {archive_us / accept_us:.2f}")
PY
if [ -s "$WORK/load.err" ]; then echo "the load failed: $(cat "$WORK/load.err")" >&2; exit 1; fi
