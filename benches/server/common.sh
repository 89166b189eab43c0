# Shared by the server benchmarks (sourced, not run): the bench configuration's parts and a
# wait for a listener.

# bench_domains: the internal domains of every bench configuration (the journal domain takes
# reports from anywhere, as a journaling service's does).
bench_domains() {
  cat <<'TOML'
[[internal_domain]]
name = "example.com"

[[internal_domain]]
name = "journal.example.com"
inbound_checks = "accept_all_inbounds"
anti_spoofing_policy = false
TOML
}

# bench_journal DESCRIPTION ADDRESS ENCRYPTED: one journal definition taking EML items from
# loopback.
bench_journal() {
  cat <<TOML

[[journal]]
description = "$1"
service_email_address = "$2"
additional_source_ip_ranges = ["127.0.0.0/8"]
encrypted = $3
journal_type = "eml"
TOML
}

# wait_port PORT: until something listens on 127.0.0.1:PORT (10 s at most).
wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}
