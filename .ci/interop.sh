#!/usr/bin/env bash
# Drives a running journal-server with real third-party clients: Python's smtplib and swaks
# (STARTTLS + AUTH PLAIN each, trusting the generated certificate) and Postfix's smtp-source
# (a short clear-text load), then checks `status` and `get`.
# Usage: .ci/interop.sh PATH_TO_journal-server
set -euo pipefail
BIN=$(realpath "$1")
WORK=$(mktemp -d)
PORT=$((26000 + RANDOM % 1000))
PASSWORD='interop-Secret-2026!-horse'
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cat > "$WORK/journal.toml" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
hostname = "mx.journal.example.com"
data_dir = "$WORK/data"

[[internal_domain]]
name = "example.com"
inbound_checks = "default_checks"

[[internal_domain]]
name = "journal.example.com"

[[journal]]
description = "Microsoft 365"
service_email_address = "journaling@journal.example.com"
use_smtp_authentication = true
password = "$PASSWORD"
encrypted = true

[[journal]]
description = "On-premises"
service_email_address = "onprem@journal.example.com"
additional_source_ip_ranges = ["127.0.0.0/8"]
encrypted = false
journal_type = "eml"
TOML

"$BIN" check-config "$WORK/journal.toml"
"$BIN" serve --config "$WORK/journal.toml" >"$WORK/out.log" 2>"$WORK/err.log" &
PID=$!
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/out.log" 2>/dev/null && break; sleep 0.1; done
CERT=$(sed -n 's/^self-signed certificate: //p' "$WORK/out.log")
REPORT=../shared/corpus/eej/synthetic/onprem_to_cc_bcc_expanded_forwarded_onbehalf.eml

echo "--- Python smtplib: STARTTLS + AUTH PLAIN"
PY_ID=$(python3 - "$PORT" "$CERT" "$PASSWORD" "$REPORT" <<'PY'
import smtplib, ssl, sys
port, cert, password, report = sys.argv[1:]
ctx = ssl.create_default_context(cafile=cert)
with smtplib.SMTP("127.0.0.1", int(port), timeout=30) as s:
    s.ehlo("python.example")
    s.starttls(context=ctx)
    s.ehlo("python.example")
    s.login("journaling@journal.example.com", password)
    s.mail("")
    code, _ = s.rcpt("journaling@journal.example.com")
    assert code == 250, code
    code, text = s.data(open(report, "rb").read())
    assert code == 250, (code, text)
    print(text.decode().split("queued as ")[1])
PY
)
echo "queued as $PY_ID"

echo "--- swaks: STARTTLS + AUTH PLAIN"
swaks --server "127.0.0.1:$PORT" --tls --auth PLAIN --auth-user journaling@journal.example.com \
  --auth-password "$PASSWORD" --from '' --to journaling@journal.example.com \
  --data "$REPORT" --helo swaks.example >"$WORK/swaks.log" 2>&1 || { cat "$WORK/swaks.log"; exit 1; }
grep -q "250 2.0.0 Ok: queued as" "$WORK/swaks.log" || { cat "$WORK/swaks.log"; exit 1; }
SWAKS_ID=$(sed -n 's/.*queued as \([0-9A-F]*\).*/\1/p' "$WORK/swaks.log" | head -1)
echo "queued as $SWAKS_ID"

echo "--- swaks: clear text is refused for the encrypted definition"
if swaks --server "127.0.0.1:$PORT" --from '' --to journaling@journal.example.com --helo swaks.example \
  --data "$REPORT" >"$WORK/clear.log" 2>&1; then cat "$WORK/clear.log"; exit 1; fi
grep -q "530 5.7.0 Must issue a STARTTLS command first" "$WORK/clear.log" || { cat "$WORK/clear.log"; exit 1; }

echo "--- Postfix smtp-source: 5 sessions, 200 messages of 4 KB"
smtp-source -s 5 -m 200 -l 4096 -f load@example.com -t onprem@journal.example.com "127.0.0.1:$PORT"

echo "--- status and get"
for _ in $(seq 1 50); do
  ITEMS=$("$BIN" status --data-dir "$WORK/data" --json --limit 0 | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["queue"]["items"]))')
  [ "$ITEMS" -ge 202 ] && break; sleep 0.2
done
"$BIN" status --data-dir "$WORK/data" --json --limit 3 | python3 -c '
import json, sys
s = json.load(sys.stdin)
c = {x["description"]: x["status"] for x in s["connectors"]}
assert c == {"Microsoft 365": "up", "On-premises": "up"}, c
assert sum(s["queue"]["counts"].values()) == 202, s["queue"]["counts"]
print("connectors up; 202 items:", s["queue"]["counts"])'
"$BIN" get --data-dir "$WORK/data" "$PY_ID" --as-received | cmp - "$REPORT" || \
  { echo "get --as-received differs from what smtplib sent"; exit 1; }
echo "interop: 6 passed, 0 failed"
