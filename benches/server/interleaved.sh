#!/usr/bin/env bash
# Interleaved throughput A/B: smtp-sink and one or more journal-server variants take turns,
# round after round, under the same load as ../shared/bench/smtp-compare.sh (Postfix's
# smtp-source, 20 sessions, 20 KB messages, a new connection per message). Alternating the
# targets spreads this VM's drift over all of them, which back-to-back runs do not.
# --sessions changes the concurrency (journal-server takes at most 50 connections from one
# address): a server that syncs before every 250 is bound by its commit latency at 20.
#
# Usage (from the project root; needs smtp-source and smtp-sink from the postfix package):
#   benches/server/interleaved.sh [--rounds N] [--messages N] [--sessions N] TARGET...
# TARGET is a journal-server binary with any extra `serve` flags, in one argument, e.g.
#   benches/server/interleaved.sh --rounds 8 target/release/journal-server \
#       "target/release/journal-server --max-commit-linger-us 0"
# Each round starts every server on a fresh data directory, warms it with 2 000 messages,
# then times MESSAGES more. Prints each target's rounds, median and ratio to smtp-sink.
set -euo pipefail
# A round that fails (a server that does not start, a refused load) must stop the script, not
# be timed: without this, `set -e` does not reach into the $(...) that collect each round.
shopt -s inherit_errexit

ROUNDS=6 MESSAGES=10000 SESSIONS=20
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --messages) MESSAGES=$2; shift 2 ;;
    --sessions) SESSIONS=$2; shift 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--rounds N] [--messages N] [--sessions N] TARGET..." >&2; exit 2; }

SINK_PORT=25261 JOURNAL_PORT=25263
mkdir -p target
# A real disk (a tmpfs would make fdatasync free).
WORK=$(mktemp -d "$PWD/target/interleaved.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# shellcheck source=benches/server/common.sh
. "$(dirname "$0")/common.sh"
{
  cat <<EOF
[server]
listen = ["127.0.0.1:$JOURNAL_PORT"]
hostname = "bench.journal.example.com"
data_dir = "$WORK/data"
max_connections = 1000

EOF
  bench_domains
  bench_journal bench journaling@journal.example.com false
} > "$WORK/journal.toml"

source_load() { # port messages
  smtp-source -s "$SESSIONS" -m "$2" -l 20480 -f bench@example.org \
    -t journaling@journal.example.com "127.0.0.1:$1" >/dev/null
}

# Prints messages per second for MESSAGES messages after a warm-up.
timed_load() { # port
  source_load "$1" 2000
  local start end
  start=$(date +%s.%N)
  source_load "$1" "$MESSAGES"
  end=$(date +%s.%N)
  python3 -c "print(round($MESSAGES / ($end - $start)))"
}

# One timed round against the server that COMMAND starts on PORT. Called inside $(...): the
# round's subshell owns the server, which is stopped however the round ends (a failure too).
round() { # port command...
  local port=$1
  shift
  "$@" >"$WORK/server.log" 2>&1 &
  # shellcheck disable=SC2064 # the pid is meant to be fixed now
  trap "kill $! 2>/dev/null; wait $! 2>/dev/null || true" EXIT
  wait_port "$port"
  timed_load "$port"
}

journal_round() { # "binary flags..."
  rm -rf "$WORK/data"
  # The target string is split on purpose: a binary, then flags for `serve`.
  local -a target
  read -ra target <<<"$1"
  round "$JOURNAL_PORT" "${target[0]}" serve --config "$WORK/journal.toml" "${target[@]:1}"
}

declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
  RESULTS[sink]="${RESULTS[sink]:-} $(round "$SINK_PORT" smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 256)"
  for target in "$@"; do
    RESULTS[$target]="${RESULTS[$target]:-} $(journal_round "$target")"
  done
  echo "round $round of $ROUNDS done" >&2
done

for target in sink "$@"; do
  python3 - "$target" "${RESULTS[$target]}" "${RESULTS[sink]}" <<'PY'
import statistics, sys
name, runs, sink = sys.argv[1], list(map(int, sys.argv[2].split())), list(map(int, sys.argv[3].split()))
median = statistics.median(runs)
print(f"{name}: {runs} median {median:.0f} msg/s, {median / statistics.median(sink):.3f}x smtp-sink")
PY
done
