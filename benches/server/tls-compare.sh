#!/usr/bin/env bash
# Acceptance over STARTTLS, as Microsoft 365 sends: journal-server beside a real Postfix with
# `smtpd_tls_security_level = encrypt`, the same certificate (ECDSA P-256 from a private CA;
# --rsa for RSA 2048) and one load client driving both identically
# (benches/examples/smtp_load.rs: rustls, the certificate verified, a full handshake on every
# connection, no resumption). A connection carries --per-connection messages: 20 by default,
# Exchange's default limit of messages per outbound connection (SmtpMaxMessagesPerConnection
# on a send connector; "Limit number of messages per connection", 20, since Exchange 2003);
# 1 is smtp-source's default and the worst case for TLS (a handshake per message).
# One journal-server serves two definitions: journaling-tls@ (encrypted = true: MAIL is
# refused before STARTTLS) and journaling@ in clear text, so the TLS cost is measured against
# the same process. Every round runs every target once, interleaved, for 20 KB and for 1 MB
# messages; medians are printed with ratios.
#
# The client shares this host's two cores with the servers. To show it is not what limits
# the rates, every line gives the CPU the client used per message (bash's `time`) beside the
# rest of the host's busy CPU per message (/proc/stat: the server, the kernel); with
# --per-connection 1 the same clear-text load also runs from Postfix's smtp-source.
#
# Usage (from the project root, as root on a throwaway machine: it reconfigures the local
# Postfix, as ../shared/bench/smtp-compare.sh does):
#   benches/server/tls-compare.sh [--rounds N] [--messages N] [--large-messages N]
#       [--sessions N] [--per-connection N] [--rsa] [--server PATH_TO_journal-server]
# Ends with `journal/postfix-tls: R` and `journal-tls/journal-clear: R` (20 KB medians).
set -euo pipefail
[ -n "${TLS_COMPARE_TRACE:-}" ] && set -x
shopt -s inherit_errexit

ROUNDS=3 MESSAGES=5000 LARGE=200 SESSIONS=20 PER=20 KEY=ec SERVER=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --messages) MESSAGES=$2; shift 2 ;;
    --large-messages) LARGE=$2; shift 2 ;;
    --sessions) SESSIONS=$2; shift 2 ;;
    --per-connection) PER=$2; shift 2 ;;
    --rsa) KEY=rsa; shift ;;
    --server) SERVER=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

NAME=bench.journal.example.com
CLEAR_RCPT=journaling@journal.example.com TLS_RCPT=journaling-tls@journal.example.com
JOURNAL_PORT=25271 POSTFIX_PORT=25272
mkdir -p target
# A real disk (a tmpfs would make fsync free).
WORK=$(mktemp -d "$PWD/target/tls-compare.XXXXXX")
chmod 755 "$WORK" # Postfix's smtpd reads the certificate from here
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  if [ -n "${POSTFIX_STARTED:-}" ]; then postfix stop >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v smtp-source >/dev/null || ! command -v postfix >/dev/null; then
  echo "installing postfix (smtp-source and the peer)..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix) >/dev/null
fi
cargo build --release -q -p mailjournal-benches --example smtp_load
LOAD=target/release/examples/smtp_load
if [ -z "$SERVER" ]; then
  cargo build --release -q -p journal-server
  SERVER=target/release/journal-server
fi

# A private CA and a server certificate it issued (what the client verifies, as Microsoft 365
# verifies a public one); both servers present the same certificate.
if [ "$KEY" = ec ]; then NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); else NEWKEY=(-newkey rsa:2048); fi
openssl req -x509 "${NEWKEY[@]}" -nodes -keyout "$WORK/ca.key" -out "$WORK/ca.pem" -days 2 \
  -subj "/CN=bench CA" 2>/dev/null
openssl req "${NEWKEY[@]}" -nodes -keyout "$WORK/key.pem" -out "$WORK/cert.csr" -subj "/CN=$NAME" 2>/dev/null
openssl x509 -req -in "$WORK/cert.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -out "$WORK/cert.pem" -days 2 \
  -extfile <(printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$NAME") 2>/dev/null
chmod 644 "$WORK/key.pem"

# shellcheck source=benches/server/common.sh
. "$(dirname "$0")/common.sh"

{
  cat <<EOF
[server]
listen = ["127.0.0.1:$JOURNAL_PORT"]
hostname = "$NAME"
data_dir = "$WORK/journal-data"
tls_certificate = "$WORK/cert.pem"
tls_private_key = "$WORK/key.pem"
max_message_size_bytes = 157286400
max_connections = 1000

EOF
  bench_domains
  bench_journal clear "$CLEAR_RCPT" false
  bench_journal tls "$TLS_RCPT" true
} > "$WORK/journal.toml"
"$SERVER" serve --config "$WORK/journal.toml" >"$WORK/journal.log" 2>&1 &
PIDS+=($!); wait_port $JOURNAL_PORT

# Postfix as in smtp-compare.sh (queued to disk, then discarded), plus a dedicated smtpd that
# requires TLS with the same certificate.
[ -f /etc/postfix/main.cf ] || cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
[ -f /etc/postfix/master.cf ] || cp /usr/share/postfix/master.cf.dist /etc/postfix/master.cf
postconf -e "inet_interfaces = loopback-only" "mydestination = localhost" \
  "relay_domains = journal.example.com" "transport_maps = inline:{journal.example.com=discard:}" \
  "default_transport = discard:" "mynetworks = 127.0.0.0/8" \
  "smtpd_recipient_restrictions = permit_mynetworks,reject" "maillog_file = /dev/stdout" \
  "default_process_limit = 100" "smtpd_client_connection_count_limit = 0" \
  "smtpd_client_connection_rate_limit = 0"
sed -i "/^$POSTFIX_PORT inet/d" /etc/postfix/master.cf
echo "$POSTFIX_PORT inet n - n - - smtpd -o smtpd_tls_security_level=encrypt -o smtpd_tls_cert_file=$WORK/cert.pem -o smtpd_tls_key_file=$WORK/key.pem" >> /etc/postfix/master.cf
postfix stop >/dev/null 2>&1 || true
postfix start-fg >"$WORK/postfix.log" 2>&1 &
POSTFIX_STARTED=1; PIDS+=($!); wait_port $POSTFIX_PORT

# Busy CPU time of the whole host so far, in clock ticks.
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }

# run LABEL PORT SIZE COUNT CLIENT...: times one load; prints "LABEL rate client_us server_us".
run() {
  local label=$1 port=$2 size=$3 count=$4; shift 4
  local b0 b1 t0 t1 times
  b0=$(busy); t0=$(date +%s.%N)
  local client=("$LOAD" --port "$port" --sessions "$SESSIONS" --messages "$count" --size "$size"
    --per-connection "$PER" "$@")
  if [ "$1" = smtp-source ]; then
    client=(smtp-source -s "$SESSIONS" -m "$count" -l "$size" -f bench@example.org -t "$CLEAR_RCPT"
      127.0.0.1:"$port")
  fi
  # `time` reports the client's own CPU; the client's messages go to a file, not into it.
  if ! times=$( { TIMEFORMAT='%U %S'; time "${client[@]}" >/dev/null 2>"$WORK/client.err"; } 2>&1 ); then
    echo "$label: the load failed: $(cat "$WORK/client.err")" >&2
    return 1
  fi
  t1=$(date +%s.%N); b1=$(busy)
  python3 - "$label" "$count" "$t0" "$t1" "$b0" "$b1" "$(getconf CLK_TCK)" $times <<'PY'
import sys
label, n, t0, t1, b0, b1, hz, cu, cs = sys.argv[1:]
n = int(n); secs = float(t1) - float(t0)
client = (float(cu) + float(cs)) / n * 1e6
total = (int(b1) - int(b0)) / int(hz) / n * 1e6
print(f"{label} {n / secs:.1f} {client:.0f} {max(total - client, 0):.0f}")
PY
}

TLS_ARGS=(--starttls "$WORK/ca.pem" --server-name "$NAME")
# targets SIZE COUNT [ROUND]: one round of every target at that size, in an order that turns
# with the round (1 MB messages are bound by writing into the page cache, and whoever comes
# after another target's 200 MB meets its writeback).
targets() {
  local size=$1 count=$2 turn=${3:-0} i
  local order=(journal-clear journal-tls postfix-tls)
  for i in 0 1 2; do
    case ${order[(i + turn) % 3]} in
      journal-clear) run journal-clear $JOURNAL_PORT "$size" "$count" --to "$CLEAR_RCPT" ;;
      journal-tls) run journal-tls $JOURNAL_PORT "$size" "$count" --to "$TLS_RCPT" "${TLS_ARGS[@]}" ;;
      postfix-tls) run postfix-tls $POSTFIX_PORT "$size" "$count" --to "$CLEAR_RCPT" "${TLS_ARGS[@]}" ;;
    esac
  done
  if [ "$size" = 20480 ] && [ "$PER" = 1 ]; then
    run journal-clear-smtp-source $JOURNAL_PORT "$size" "$count" smtp-source
  fi
}

# A warm-up of each, untimed (and a check that each target takes the load).
targets 20480 500 >/dev/null
RESULTS="$WORK/results"
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  for spec in "20480 $MESSAGES" "1048576 $LARGE"; do
    read -r size count <<<"$spec"
    targets "$size" "$count" "$round" | while read -r label rate client server; do
      echo "$size $label $rate $client $server" | tee -a "$RESULTS" |
        awk '{printf "round '"$round"' %7s B %-26s %8.1f msg/s  client %5d us/msg  rest %6d us/msg\n", $1, $2, $3, $4, $5}'
    done
  done
done

python3 - "$RESULTS" "$SESSIONS" "$KEY" "$PER" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
sessions, key, per = sys.argv[2], sys.argv[3], sys.argv[4]
def med(size, label, col=2):
    return statistics.median(float(r[col]) for r in rows if r[0] == size and r[1] == label)
print(f"--- medians ({sessions} sessions, {per} messages a connection, STARTTLS on every one, {key} certificate)")
for size in ("20480", "1048576"):
    labels = sorted({r[1] for r in rows if r[0] == size})
    for label in labels:
        print(f"{size:>7} B {label:<26} {med(size, label):8.1f} msg/s  client {med(size, label, 3):5.0f} us/msg  rest {med(size, label, 4):6.0f} us/msg")
    j, p, c = med(size, "journal-tls"), med(size, "postfix-tls"), med(size, "journal-clear")
    print(f"{size:>7} B journal/postfix-tls: {j / p:.2f}  journal-tls/journal-clear: {j / c:.2f}")
j, p, c = med("20480", "journal-tls"), med("20480", "postfix-tls"), med("20480", "journal-clear")
print(f"journal/postfix-tls: {j / p:.2f}")
print(f"journal-tls/journal-clear: {j / c:.2f}")
PY
