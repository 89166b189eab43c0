//! An SMTP load client that speaks STARTTLS (rustls), for the server benchmarks
//! (`benches/server/tls-compare.sh`, `benches/server/end-to-end.sh`): Postfix's `smtp-source`
//! has no TLS, and Postal's GnuTLS handshake fails against rustls here.
//!
//! `SESSIONS` threads each open a connection, say EHLO, optionally STARTTLS (the certificate
//! verified against `--ca` for `--server-name`, a full handshake every time: no resumption, as
//! a new sender would), EHLO again, then send `--per-connection` messages of `--size` bytes
//! (each with its own Message-ID) and QUIT; until `--messages` are sent or `--seconds` have
//! passed. Replies are read in lockstep (no PIPELINING), as `smtp-source` does by default.
//! Any reply other than the expected one stops the run with an error: a benchmark must not
//! count refused mail.
//!
//! ```text
//! cargo build --release -p mailjournal-benches --example smtp_load
//! target/release/examples/smtp_load --port 2525 --sessions 20 --messages 5000 --size 20480 \
//!     --starttls cert.pem --server-name bench.journal.example.com
//! ```
//!
//! Prints one line: `sent N in S s: R msg/s`.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const USAGE: &str = "usage: smtp_load --port N [--host ADDR] [--sessions N] (--messages N | --seconds N) \
[--size BYTES] [--per-connection N] [--from ADDR] [--to ADDR] [--starttls CA.pem --server-name NAME]";

/// What to send, and where.
#[derive(Debug, Clone)]
struct Load {
    address: String,
    sessions: usize,
    messages: Option<u64>,
    seconds: Option<u64>,
    size: usize,
    per_connection: u64,
    from: String,
    to: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

fn main() {
    let load = match parse_args(std::env::args().skip(1)) {
        Ok(load) => load,
        Err(e) => {
            eprintln!("smtp_load: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let sent = Arc::new(AtomicU64::new(0));
    let claimed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let start = Instant::now();
    let workers: Vec<_> = (0..load.sessions)
        .map(|n| {
            let (load, sent, claimed, stop, failure) = (
                load.clone(),
                sent.clone(),
                claimed.clone(),
                stop.clone(),
                failure.clone(),
            );
            std::thread::spawn(move || {
                let body = Body::new(load.size, &load.from, &load.to, n);
                let deadline = load.seconds.map(|s| start + Duration::from_secs(s));
                // Claims the next message's number, or None once the run is over.
                let next = || {
                    if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        return None;
                    }
                    let number = claimed.fetch_add(1, Ordering::Relaxed);
                    load.messages.is_none_or(|m| number < m).then_some(number)
                };
                while let Some(first) = next() {
                    if let Err(e) = session(&load, &body, first, &next, &sent) {
                        stop.store(true, Ordering::Relaxed);
                        failure
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get_or_insert(e.to_string());
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(e) = failure
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    {
        eprintln!("smtp_load: {e}");
        std::process::exit(1);
    }
    let sent = sent.load(Ordering::Relaxed);
    println!(
        "sent {sent} in {elapsed:.3} s: {:.1} msg/s",
        sent as f64 / elapsed
    );
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Load, String> {
    let (mut host, mut port, mut ca, mut server_name) = ("127.0.0.1".to_owned(), None, None, None);
    let mut load = Load {
        address: String::new(),
        sessions: 20,
        messages: None,
        seconds: None,
        size: 20_480,
        per_connection: 1,
        from: "bench@example.org".into(),
        to: "journaling@journal.example.com".into(),
        tls: None,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--host" => host = value.clone(),
            "--port" => port = Some(number()?),
            "--sessions" => load.sessions = number()? as usize,
            "--messages" => load.messages = Some(number()?),
            "--seconds" => load.seconds = Some(number()?),
            "--size" => load.size = number()? as usize,
            "--per-connection" => load.per_connection = number()?.max(1),
            "--from" => load.from = value,
            "--to" => load.to = value,
            "--starttls" => ca = Some(value),
            "--server-name" => server_name = Some(value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let port = port.ok_or("--port is needed")?;
    if load.messages.is_none() == load.seconds.is_none() {
        return Err("one of --messages and --seconds is needed".into());
    }
    load.address = format!("{host}:{port}");
    if let Some(ca) = ca {
        let name = server_name.ok_or("--starttls needs --server-name")?;
        load.tls = Some(tls_config(&ca, name)?);
    }
    Ok(load)
}

/// A client configuration that trusts only `ca` and never resumes a session.
fn tls_config(
    ca: &str,
    name: String,
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{ca}: {e}"))? {
        roots
            .add(cert.map_err(|e| format!("{ca}: {e}"))?)
            .map_err(|e| format!("{ca}: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let name = ServerName::try_from(name).map_err(|e| e.to_string())?;
    Ok((Arc::new(config), name))
}

/// A message of about `size` bytes; `{N}` in its Message-ID is replaced per message.
struct Body {
    head: String,
    tail: Vec<u8>,
}

impl Body {
    fn new(size: usize, from: &str, to: &str, session: usize) -> Body {
        let head = format!(
            "From: <{from}>\r\nTo: <{to}>\r\nSubject: bench\r\nDate: Mon, 6 May 2024 09:14:58 +0000\r\n\
             MIME-Version: 1.0\r\nMessage-ID: <{{N}}.{session}.{}@bench.example.org>\r\n\r\n",
            std::process::id()
        );
        let mut tail = Vec::with_capacity(size + 80);
        let mut state: u32 = 0x9e37_79b9 ^ session as u32;
        while head.len() + tail.len() < size {
            for _ in 0..76 {
                // xorshift: incompressible lines that never start with a dot.
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                tail.push(b'A' + (state % 26) as u8);
            }
            tail.extend_from_slice(b"\r\n");
        }
        tail.extend_from_slice(b".\r\n");
        Body { head, tail }
    }
}

/// A connection, in clear text or TLS.
enum Stream {
    Clear(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Clear(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Clear(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Clear(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Lockstep SMTP over a stream, with the bytes read past a reply kept for the next one.
struct Conversation {
    stream: Stream,
    buffer: Vec<u8>,
}

impl Conversation {
    /// Reads one (possibly multi-line) reply and checks its code.
    fn expect(&mut self, code: &str, after: &str) -> io::Result<()> {
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buffer.drain(..end + 2).collect();
                if line.len() < 4 || !line.starts_with(code.as_bytes()) {
                    return Err(io::Error::other(format!(
                        "after {after}: {}",
                        String::from_utf8_lossy(&line).trim_end()
                    )));
                }
                if line[3] == b' ' {
                    return Ok(());
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::other(format!("connection closed after {after}")));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    fn command(&mut self, line: &str, code: &str) -> io::Result<()> {
        self.stream.write_all(line.as_bytes())?;
        self.stream.write_all(b"\r\n")?;
        self.stream.flush()?;
        self.expect(code, line)
    }
}

/// One connection: the message numbered `first`, then as many more as `next` hands out, up to
/// `--per-connection`.
fn session(
    load: &Load,
    body: &Body,
    first: u64,
    next: &dyn Fn() -> Option<u64>,
    sent: &AtomicU64,
) -> io::Result<()> {
    let tcp = TcpStream::connect(&load.address)?;
    tcp.set_nodelay(true)?;
    let mut smtp = Conversation {
        stream: Stream::Clear(tcp),
        buffer: Vec::new(),
    };
    smtp.expect("220", "connecting")?;
    smtp.command("EHLO load.example.org", "250")?;
    if let Some((config, name)) = &load.tls {
        smtp.command("STARTTLS", "220")?;
        if !smtp.buffer.is_empty() {
            return Err(io::Error::other("bytes after the STARTTLS reply"));
        }
        let Stream::Clear(tcp) = smtp.stream else {
            unreachable!("STARTTLS on a clear connection")
        };
        let tls = rustls::ClientConnection::new(config.clone(), name.clone())
            .map_err(io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(tls, tcp);
        // The handshake, now rather than inside the first write.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        smtp.stream = Stream::Tls(Box::new(stream));
        smtp.command("EHLO load.example.org", "250")?;
    }
    let mut number = Some(first);
    let mut in_connection = 0;
    while let Some(n) = number {
        smtp.command(&format!("MAIL FROM:<{}>", load.from), "250")?;
        smtp.command(&format!("RCPT TO:<{}>", load.to), "250")?;
        smtp.command("DATA", "354")?;
        smtp.stream
            .write_all(body.head.replace("{N}", &n.to_string()).as_bytes())?;
        smtp.stream.write_all(&body.tail)?;
        smtp.stream.flush()?;
        smtp.expect("250", "the end of data")?;
        sent.fetch_add(1, Ordering::Relaxed);
        in_connection += 1;
        number = if in_connection < load.per_connection {
            next()
        } else {
            None
        };
    }
    smtp.command("QUIT", "221")
}
