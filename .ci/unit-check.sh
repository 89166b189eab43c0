#!/usr/bin/env bash
# The shipped systemd unit (examples/journal-server/dist/journal-server.service) parses cleanly.
# `systemd-analyze verify` only warns about unknown keys and bad values (exit 0), so any output
# fails the check. Usage: .ci/unit-check.sh JOURNAL_SERVER_BINARY
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:?usage: $0 JOURNAL_SERVER_BINARY}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The unit names the installed binary; verify checks that ExecStart is executable.
sed "s#/usr/local/bin/journal-server#$BIN#" examples/journal-server/dist/journal-server.service \
  >"$work/journal-server.service"
out=$(systemd-analyze verify "$work/journal-server.service" 2>&1) || { echo "$out"; exit 1; }
if [ -n "$out" ]; then
  echo "$out"
  exit 1
fi
echo "systemd unit: verified"
