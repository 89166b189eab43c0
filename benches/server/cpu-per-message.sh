#!/usr/bin/env bash
# CPU per message of smtp-sink and of journal-server (per thread), under the load of
# ../shared/bench/smtp-compare.sh: Postfix's smtp-source, 20 sessions, 20 KB messages, one a
# connection. Each server takes 2 000 messages of warm-up, then MESSAGES more; the CPU is
# read from /proc (user and system ticks) before and after. Where journal-server stays below
# smtp-sink's rate, this says where its CPU goes against the sink's.
#
# Usage (from the project root; smtp-source and smtp-sink from the postfix package):
#   benches/server/cpu-per-message.sh [--messages N] [BINARY]
set -euo pipefail
shopt -s inherit_errexit
N=10000
if [ "${1:-}" = --messages ]; then N=$2; shift 2; fi
BIN=${1:-target/release/journal-server}
# shellcheck source=benches/server/common.sh
. "$(dirname "$0")/common.sh"
mkdir -p target
# A real disk (a tmpfs would make fdatasync free).
WORK=$(mktemp -d "$PWD/target/cpu-per-message.XXXXXX")
PIDS=()
trap 'for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT
HZ=$(getconf CLK_TCK)

load() { # port messages
  smtp-source -s 20 -m "$2" -l 20480 -f bench@example.org -t journaling@journal.example.com \
    "127.0.0.1:$1" >/dev/null
}
# threads PID: "name user system" ticks per thread name.
threads() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ <"$t/comm")" "$(awk '{print $14, $15}' "$t/stat")"
  done
}
# per_message LABEL BEFORE AFTER: prints each thread's and the total CPU per message.
per_message() {
  python3 - "$1" "$N" "$HZ" "$2" "$3" <<'PY'
import collections, sys
label, n, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def read(path):
    ticks = collections.defaultdict(lambda: [0, 0])
    for line in open(path):
        name, user, system = line.split()
        ticks[name][0] += int(user); ticks[name][1] += int(system)
    return ticks
before, after = read(sys.argv[4]), read(sys.argv[5])
us = lambda t: t * 1e6 / hz / n
total = [0.0, 0.0]
for name in sorted(after):
    user = us(after[name][0] - before[name][0]); system = us(after[name][1] - before[name][1])
    total[0] += user; total[1] += system
    if user + system > 0.5:
        print(f"{label} {name:<18} user {user:6.1f}  system {system:6.1f} us per message")
print(f"{label} total: {total[0] + total[1]:.1f} us per message (user {total[0]:.1f}, system {total[1]:.1f})")
PY
}

smtp-sink -u nobody 127.0.0.1:25301 256 >/dev/null 2>&1 &
PIDS+=($!); wait_port 25301
load 25301 2000
threads "${PIDS[0]}" >"$WORK/sink.0"; load 25301 "$N"; threads "${PIDS[0]}" >"$WORK/sink.1"
per_message smtp-sink "$WORK/sink.0" "$WORK/sink.1"

{
  cat <<TOML
[server]
listen = ["127.0.0.1:25302"]
hostname = "bench.journal.example.com"
data_dir = "$WORK/data"
max_connections = 1000

TOML
  bench_domains
  bench_journal bench journaling@journal.example.com false
} >"$WORK/journal.toml"
"$BIN" serve --config "$WORK/journal.toml" >"$WORK/journal.log" 2>&1 &
PIDS+=($!); wait_port 25302
load 25302 2000
threads "${PIDS[1]}" >"$WORK/journal.0"; load 25302 "$N"; threads "${PIDS[1]}" >"$WORK/journal.1"
per_message journal-server "$WORK/journal.0" "$WORK/journal.1"
