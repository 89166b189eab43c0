#!/usr/bin/env python3
"""Memory of a running journal-server: RSS per idle connection (1 000 connections held open
after EHLO) and peak RSS while one client sends a 150 MB message.

Usage: python3 benches/server/memory.py target/release/journal-server
"""
import os, re, socket, subprocess, sys, tempfile, time

BIN = os.path.abspath(sys.argv[1])
work = tempfile.mkdtemp()
config = os.path.join(work, "journal.toml")
with open(config, "w") as f:
    f.write(f"""[server]
listen = ["127.0.0.1:0"]
hostname = "mx.journal.example.com"
data_dir = "{work}/data"
max_message_size_bytes = 167772160
max_connections = 2000

[[internal_domain]]
name = "example.com"
inbound_checks = "default_checks"

[[internal_domain]]
name = "journal.example.com"

[[journal]]
description = "memory"
service_email_address = "journaling@journal.example.com"
additional_source_ip_ranges = ["127.0.0.0/8"]
encrypted = false
journal_type = "eml"
""")

def status(field):
    with open(f"/proc/{server.pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB

def reply(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed: %r" % data)
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data

def start():
    global server, port
    server = subprocess.Popen([BIN, "serve", "--config", config], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in server.stdout:
        m = re.match(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
            return

start()
time.sleep(0.5)
base = status("VmRSS")
conns = []
for i in range(1000):
    s = socket.socket()
    s.bind((f"127.0.0.{2 + i // 40}", 0))  # the server caps 50 connections per client address
    s.connect(("127.0.0.1", port))
    reply(s)
    s.sendall(b"EHLO idle.example\r\n")
    reply(s)
    conns.append(s)
time.sleep(0.5)
held = status("VmRSS")
print(f"idle connections: 1000, RSS {base} kB -> {held} kB, {(held - base) / 1000:.1f} kB per connection")
for s in conns:
    s.close()
server.terminate()
server.wait()

# A fresh server, so that the peak below is the big message's alone.
start()
time.sleep(0.5)

size = 150 * 1024 * 1024
line = b"A" * 998 + b"\r\n"
s = socket.create_connection(("127.0.0.1", port))
reply(s)
for cmd in (b"EHLO big.example", b"MAIL FROM:<big@example.com> SIZE=%d" % size, b"RCPT TO:<journaling@journal.example.com>", b"DATA"):
    s.sendall(cmd + b"\r\n")
    reply(s)
s.sendall(b"Subject: big\r\n\r\n")
block = line * 1024
sent = 0
while sent < size:
    s.sendall(block)
    sent += len(block)
s.sendall(b".\r\n")
answer = reply(s).decode().strip()
peak = status("VmHWM")
print(f"150 MB message: {answer}; peak RSS (VmHWM) {peak} kB = {peak / 1024:.1f} MB")
s.close()
server.terminate()
server.wait()
