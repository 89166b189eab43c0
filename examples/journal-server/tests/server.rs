//! The reference server as a real process on an ephemeral port, driven by real clients:
//! lettre over STARTTLS with AUTH PLAIN, and a raw SMTP client for the protocol corners.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::get;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpus/eej");
const PASSWORD: &str = "correct-horse-battery-staple";

struct Server {
    child: Child,
    port: u16,
    data_dir: PathBuf,
    cert: PathBuf,
    /// What the server logged (stderr), as it arrives.
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Waits until the log has said `needle` `times` times.
    fn wait_for_log(&self, needle: &str, times: usize) {
        let start = Instant::now();
        while self.log.lock().unwrap().matches(needle).count() < times {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the log never said {needle:?} {times} times: {}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("journal-server-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `serve` with a configuration whose journal definition has `journal_settings`.
fn start(name: &str, server_settings: &str, journal_settings: &str) -> Server {
    let dir = temp_dir(name);
    let data_dir = dir.join("data");
    let config = format!(
        "[server]\nhostname = \"mx.journal.contoso.com\"\ndata_dir = \"{}\"\n{server_settings}\n\
         [[internal_domain]]\nname = \"contoso.com\"\ninbound_checks = \"default_checks\"\n\
         [[internal_domain]]\nname = \"journal.contoso.com\"\n\
         [[journal]]\ndescription = \"Microsoft 365\"\nservice_email_address = \"journaling@journal.contoso.com\"\n{journal_settings}\n",
        data_dir.display()
    );
    let config_path = dir.join("journal.toml");
    std::fs::write(&config_path, config).unwrap();
    serve(&config_path, data_dir)
}

/// Starts `serve` again on the data directory (and configuration) of a stopped server.
fn restart(data_dir: &Path) -> Server {
    let config_path = data_dir.parent().unwrap().join("journal.toml");
    serve(&config_path, data_dir.to_path_buf())
}

/// Runs `serve --config CONFIG_PATH` on an ephemeral port; returns once it listens.
fn serve(config_path: &Path, data_dir: PathBuf) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_journal-server"))
        .args([
            "serve",
            "--config",
            config_path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--match-interval-seconds",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained as it comes: a full pipe would stall the server's logging.
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut port, mut cert) = (0, PathBuf::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(path) = line.strip_prefix("self-signed certificate: ") {
            cert = PathBuf::from(path);
        }
        if let Some(addr) = line.strip_prefix("listening on ") {
            port = addr.rsplit(':').next().unwrap().parse().unwrap();
            break;
        }
    }
    assert_ne!(port, 0, "the server did not start");
    Server {
        child,
        port,
        data_dir,
        cert,
        log,
    }
}

/// A line-based SMTP client over a plain socket.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        Client::from_stream(stream)
    }

    /// Connected, greeted and past a successful EHLO.
    fn greeted(port: u16) -> Client {
        let mut client = Client::connect(port);
        assert_eq!(client.cmd("EHLO client.example").0, 250);
        client
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let mut client = Client { stream, reader };
        assert_eq!(client.reply().0, 220);
        client
    }

    fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(line.len() >= 4, "connection closed: {text}{line}");
            text.push_str(&line);
            if line.as_bytes()[3] == b' ' {
                return (line[..3].parse().unwrap(), text);
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }
}

fn status_json(data_dir: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_journal-server"))
        .args([
            "status",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--json",
            "--limit",
            "0",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn wait_for_state(data_dir: &Path, id: &str, state: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let status = status_json(data_dir);
        let found = status["queue"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == id && i["state"] == state);
        if found {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{id} never reached {state}: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn queue_id(reply: &str) -> String {
    reply.split("queued as ").nth(1).unwrap().trim().to_owned()
}

#[test]
fn lettre_starttls_auth_plain_journal_report_archived_with_bcc() {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor, address::Envelope};

    let server = start(
        "lettre",
        "",
        &format!("use_smtp_authentication = true\npassword = \"{PASSWORD}\"\nencrypted = true"),
    );
    let report = std::fs::read(format!(
        "{CORPUS}/synthetic/onprem_to_cc_bcc_expanded_forwarded_onbehalf.eml"
    ))
    .unwrap();
    let pem = std::fs::read(&server.cert).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let response = runtime.block_on(async {
        let tls = TlsParameters::builder("localhost".into())
            .add_root_certificate(Certificate::from_pem(&pem).unwrap())
            .build_rustls()
            .unwrap();
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(server.port)
            .tls(Tls::Required(tls))
            .credentials(Credentials::new(
                "journaling@journal.contoso.com".into(),
                PASSWORD.into(),
            ))
            .build();
        let to: Address = "journaling@journal.contoso.com".parse().unwrap();
        transport
            .send_raw(&Envelope::new(None, vec![to]).unwrap(), &report)
            .await
    });
    let response = response.expect("lettre delivered the report");
    assert_eq!(response.code().to_string(), "250");
    let text = response.message().collect::<Vec<_>>().join(" ");
    let id = queue_id(&text);

    let status = wait_for_state(&server.data_dir, &id, "archived");
    assert_eq!(status["connectors"][0]["status"], "up");
    // The report is in the live segment, the one the server appends to.
    assert_eq!(status["spool"]["live_segments"], 1);
    assert!(status["spool"]["live_bytes"].as_u64().unwrap() >= report.len() as u64);
    assert_eq!(status["spool"]["kept_segments"], 0);
    assert_eq!(
        status["connectors"][0]["service_email_address"],
        "journaling@journal.contoso.com"
    );
    let item = &status["queue"]["items"][0];
    assert_eq!(item["recipient"], "journaling@journal.contoso.com");
    assert_eq!(item["definition"], "Microsoft 365");

    // The archive holds every envelope recipient, the Bcc ones included.
    let db = rusqlite::Connection::open(server.data_dir.join("archive.sqlite3")).unwrap();
    let mut stmt = db.prepare("SELECT address, field FROM archived_recipients WHERE archived_id = ?1 ORDER BY address").unwrap();
    let recipients: Vec<(String, String)> = stmt
        .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        recipients.contains(&("legal@contoso.com".into(), "bcc".into())),
        "{recipients:?}"
    );
    assert!(
        recipients.contains(&("ext-auditor@fabrikam.com".into(), "bcc".into())),
        "{recipients:?}"
    );
    assert_eq!(recipients.len(), 7);

    // get: as received is the exact bytes; the archived message is the original.
    let (code, received) = get(&server.data_dir, &id, true);
    assert_eq!(code, Some(0));
    // lettre ends DATA with CRLF.CRLF after the body whatever its last bytes, so the stored
    // message is the report plus one CRLF: exactly what was transmitted.
    assert!(
        received == [report.as_slice(), b"\r\n"].concat(),
        "as-received differs ({} vs {} bytes)",
        received.len(),
        report.len()
    );
    let (code, archived) = get(&server.data_dir, &id, false);
    assert_eq!(code, Some(0));
    assert!(archived.starts_with(b"From: Sales Team <sales@contoso.com>"));
    assert_eq!(get(&server.data_dir, "00000000000000AA", false).0, Some(1));
}

#[test]
fn encrypted_definition_refuses_clear_text_and_auth_in_clear() {
    let server = start(
        "cleartext",
        "",
        "additional_source_ip_ranges = [\"127.0.0.1/32\"]\nencrypted = true",
    );
    let mut c = Client::greeted(server.port);
    let (code, text) = c.cmd("MAIL FROM:<>");
    assert_eq!(code, 530, "{text}");
    assert!(text.contains("5.7.0 Must issue a STARTTLS command first"));
    assert_eq!(c.cmd("AUTH PLAIN AGEAYg==").0, 538);
}

#[test]
fn wrong_source_address_is_refused() {
    let server = start(
        "source",
        "",
        "additional_source_ip_ranges = [\"127.0.0.1/32\"]\nencrypted = false",
    );
    let mut c = Client::from_stream(connect_from([127, 0, 0, 2], server.port));
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<>");
    let (code, text) = c.cmd("RCPT TO:<journaling@journal.contoso.com>");
    assert_eq!(code, 550, "{text}");
    assert!(
        text.contains("5.7.1") && text.contains("127.0.0.2"),
        "{text}"
    );
    // The same from an allowed address works.
    let mut ok = Client::greeted(server.port);
    ok.cmd("MAIL FROM:<>");
    assert_eq!(ok.cmd("RCPT TO:<journaling@journal.contoso.com>").0, 250);
}

/// A connection to the server from the loopback address `local` (the OS would pick
/// 127.0.0.1).
fn connect_from(local: [u8; 4], port: u16) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((local, 0).into()).unwrap();
        socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .unwrap()
            .into_std()
            .unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
}

/// The first line a connection hears, and whether the server then closes it.
fn greeting_and_close(stream: TcpStream) -> (String, bool) {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut rest = Vec::new();
    let closed = reader.read_to_end(&mut rest).is_ok_and(|_| rest.is_empty());
    (line, closed)
}

#[test]
fn max_connections_are_refused_with_421_and_stress_cuts_idle_clients_short() {
    // Stress begins at 3 of 4 open connections and ends below 2.
    let server = start_clear_text_with("stress", "max_connections = 4");
    // Two clients idle before stress begins, two more that bring it on.
    let early: Vec<Client> = (0..2).map(|_| Client::greeted(server.port)).collect();
    let greeted_at = Instant::now();
    let late: Vec<Client> = (0..2).map(|_| Client::greeted(server.port)).collect();
    server.wait_for_log("under stress", 1);
    let (refused, closed) =
        greeting_and_close(TcpStream::connect(("127.0.0.1", server.port)).unwrap());
    assert!(refused.starts_with("421 4.3.2 "), "{refused}");
    assert!(closed, "a refused connection is closed");
    // Idle clients are cut off after the short timeout, counted from their last command (not
    // after five minutes), until fewer than half the connections are open; then stress is
    // over, and whoever is left has the normal timeouts again. Which ones go first is up to
    // the scheduler: their deadlines fall within a millisecond of each other.
    server.wait_for_log("stress over", 1);
    let waited = greeted_at.elapsed();
    assert!(waited >= Duration::from_secs(9), "cut off after {waited:?}");
    let mut left = Vec::new();
    let mut early_cut = 0;
    for (index, mut client) in early.into_iter().chain(late).enumerate() {
        client
            .stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut line = String::new();
        match client.reader.read_line(&mut line) {
            Ok(_) => {
                assert!(
                    line.starts_with("421 4.4.2 ") && line.contains("timeout"),
                    "{line}"
                );
                early_cut += usize::from(index < 2);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => left.push(client),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        early_cut >= 1,
        "a client already waiting when stress began is cut off too"
    );
    assert!(
        left.len() <= 1,
        "{} idle clients left when stress ended",
        left.len()
    );
    left.push(Client::greeted(server.port));
    std::thread::sleep(Duration::from_secs(12));
    for mut client in left {
        client
            .stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        assert_eq!(client.cmd("NOOP").0, 250);
    }
}

#[test]
fn one_client_address_holds_at_most_fifty_connections() {
    let server = start_clear_text_with("per-client", "max_connections = 100");
    let held: Vec<Client> = (0..50).map(|_| Client::greeted(server.port)).collect();
    let (refused, closed) = greeting_and_close(connect_from([127, 0, 0, 1], server.port));
    assert!(refused.starts_with("421 4.7.0 "), "{refused}");
    assert!(closed);
    // Another address is not affected, and a place given back is free again.
    let mut other = Client::from_stream(connect_from([127, 0, 0, 2], server.port));
    assert_eq!(other.cmd("EHLO other.example").0, 250);
    drop(held);
    let start = Instant::now();
    loop {
        let stream = connect_from([127, 0, 0, 1], server.port);
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        if line.starts_with("220 ") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{line}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn wrong_recipient_and_oversize_are_refused() {
    let server = start(
        "oversize",
        "max_message_size_bytes = 100000",
        "additional_source_ip_ranges = [\"127.0.0.0/8\"]\nencrypted = false",
    );
    let mut c = Client::greeted(server.port);
    assert_eq!(c.cmd("MAIL FROM:<> SIZE=200000").0, 552);
    assert_eq!(c.cmd("MAIL FROM:<>").0, 250);
    let (code, text) = c.cmd("RCPT TO:<postmaster@journal.contoso.com>");
    assert_eq!(code, 550);
    assert!(text.contains("5.1.1"));
    assert_eq!(c.cmd("RCPT TO:<someone@fabrikam.com>").0, 550);
    assert_eq!(c.cmd("RCPT TO:<journaling@journal.contoso.com>").0, 250);
    assert_eq!(c.cmd("DATA").0, 354);
    let line = "x".repeat(998);
    for _ in 0..150 {
        c.send(format!("{line}\r\n").as_bytes());
    }
    c.send(b".\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 552, "{text}");
    assert_eq!(c.cmd("NOOP").0, 250, "still in sync");
    let status = status_json(&server.data_dir);
    assert_eq!(status["queue"]["items"].as_array().unwrap().len(), 0);
}

#[test]
fn smuggling_vectors_and_bdat() {
    let server = start_clear_text("smuggling");
    let mut c = Client::connect(server.port);
    open_data(&mut c);
    let body = b"From: a@contoso.com\r\nSubject: smuggle\r\n\r\nhello\n.\nMAIL FROM:<spoof@contoso.com>\r\nRCPT TO:<journaling@journal.contoso.com>\r\nDATA\r\nforged\r\n\r.\r\nend\r\n";
    c.send(body);
    c.send(b".\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 250, "{text}");
    let id = queue_id(&text);
    let (code, received) = get(&server.data_dir, &id, true);
    assert_eq!(code, Some(0));
    assert!(
        received == body,
        "stored byte for byte: {:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(c.cmd("NOOP").0, 250, "no reply to the smuggled commands");

    // BDAT with a bare LF, pipelined.
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<journaling@journal.contoso.com>\r\nBDAT 16 LAST\r\nSubject: b\n\nbody");
    assert_eq!(c.reply().0, 250);
    assert_eq!(c.reply().0, 250);
    let (code, text) = c.reply();
    assert_eq!(code, 250, "{text}");
    let bdat_id = queue_id(&text);
    assert_eq!(
        get(&server.data_dir, &bdat_id, true).1,
        b"Subject: b\n\nbody"
    );
    assert_eq!(c.cmd("QUIT").0, 221);
    let mut rest = Vec::new();
    let _ = c.reader.read_to_end(&mut rest);
    assert!(rest.is_empty());
    // Queue details follow the commit log within moments (the pipeline batches its writes).
    let start = Instant::now();
    loop {
        let status = status_json(&server.data_dir);
        let items = status["queue"]["items"].as_array().unwrap();
        if items.len() == 2 {
            let ids: Vec<_> = items
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect();
            assert!(ids.contains(&id) && ids.contains(&bdat_id), "{status}");
            break;
        }
        assert!(
            items.len() < 2 && start.elapsed() < Duration::from_secs(20),
            "{status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A server whose definition takes clear text from loopback.
fn start_clear_text(name: &str) -> Server {
    start_clear_text_with(name, "")
}

/// [`start_clear_text`] with these `[server]` settings.
fn start_clear_text_with(name: &str, server_settings: &str) -> Server {
    start(
        name,
        server_settings,
        "additional_source_ip_ranges = [\"127.0.0.0/8\"]\nencrypted = false",
    )
}

/// EHLO, a null sender, the journal address, DATA: the client may send the message.
fn open_data(c: &mut Client) {
    c.cmd("EHLO client.example");
    assert_eq!(c.cmd("MAIL FROM:<>").0, 250);
    assert_eq!(c.cmd("RCPT TO:<journaling@journal.contoso.com>").0, 250);
    assert_eq!(c.cmd("DATA").0, 354);
}

fn send_data(c: &mut Client, message: &[u8]) -> String {
    assert_eq!(c.cmd("MAIL FROM:<>").0, 250);
    assert_eq!(c.cmd("RCPT TO:<journaling@journal.contoso.com>").0, 250);
    assert_eq!(c.cmd("DATA").0, 354);
    c.send(&mailjournal::smtp::data::dot_stuff(message));
    let (code, text) = c.reply();
    assert_eq!(code, 250, "{text}");
    queue_id(&text)
}

#[test]
fn two_reports_of_one_message_merge_their_recipients() {
    let server = start_clear_text("dedup");
    let first = std::fs::read(format!(
        "{CORPUS}/synthetic/rms_protected_plus_decrypted_copy.eml"
    ))
    .unwrap();
    // The same message reported again for another recipient (e.g. a bifurcated copy).
    let second = String::from_utf8(first.clone()).unwrap().replace(
        "\r\nTo: bob@contoso.com\r\n",
        "\r\nCc: carol@contoso.com\r\n",
    );
    assert_ne!(first, second.as_bytes());
    let mut c = Client::greeted(server.port);
    let a = send_data(&mut c, &first);
    wait_for_state(&server.data_dir, &a, "archived");
    let b = send_data(&mut c, second.as_bytes());
    wait_for_state(&server.data_dir, &b, "merged");
    let db = rusqlite::Connection::open(server.data_dir.join("archive.sqlite3")).unwrap();
    let mut stmt = db.prepare("SELECT address, field, source_item FROM archived_recipients WHERE archived_id = ?1 ORDER BY address").unwrap();
    let rows: Vec<(String, String, String)> = stmt
        .query_map([&a], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        [
            ("bob@contoso.com".into(), "to".into(), a.clone()),
            ("carol@contoso.com".into(), "cc".into(), b.clone())
        ]
    );
    let archived: i64 = db
        .query_row("SELECT COUNT(*) FROM archived", [], |r| r.get(0))
        .unwrap();
    assert_eq!(archived, 1, "one archived message, two delivery records");
    let (code, merged) = get(&server.data_dir, &b, false);
    assert_eq!(
        code,
        Some(0),
        "a merged item's archived form is retrievable"
    );
    assert!(
        merged.ends_with(b"Decrypted clear-text body.\r\n")
            || merged.windows(13).any(|w| w == b"message.rpmsg")
    );
}

#[test]
fn a_second_server_on_a_data_directory_in_use_refuses_to_start() {
    let server = start_clear_text("twin");
    // A large message half received: its data file is on disk, with no record yet. A second
    // server's recovery would take it for debris and remove it.
    let mut c = Client::connect(server.port);
    open_data(&mut c);
    let body = [
        b"From: a@contoso.com\r\nSubject: large\r\n\r\n".as_slice(),
        &b"y".repeat(998),
        b"\r\n",
    ]
    .concat()
    .repeat(1500);
    c.send(&body);
    let data = server.data_dir.join("spool/data");
    let start = Instant::now();
    while std::fs::read_dir(&data).unwrap().count() == 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "no data file");
        std::thread::sleep(Duration::from_millis(20));
    }

    let config = server.data_dir.parent().unwrap().join("journal.toml");
    let mut twin = Command::new(env!("CARGO_BIN_EXE_journal-server"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = twin.try_wait().unwrap() {
            break exit;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = twin.kill();
            panic!("a second server runs on the same data directory");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    twin.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!exit.success());
    assert!(
        stderr.contains("in use by another journal-server"),
        "{stderr}"
    );

    // The first one goes on, and what it acknowledges is stored.
    c.send(b".\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 250, "{text}");
    let (code, received) = get(&server.data_dir, &queue_id(&text), true);
    assert_eq!(code, Some(0));
    assert!(received == body, "stored byte for byte");
}

#[test]
fn a_spool_that_can_no_longer_sync_stops_the_server_and_a_restart_recovers_it() {
    let mut server = start_clear_text("sync-fails");
    let mut c = Client::greeted(server.port);
    let before = send_data(&mut c, b"Subject: before\r\n\r\nhi\r\n");
    // A large message's data file: its directory is synced with the message's batch. Moved
    // away, that sync fails for real, as a failing disk's would.
    assert_eq!(c.cmd("MAIL FROM:<>").0, 250);
    assert_eq!(c.cmd("RCPT TO:<journaling@journal.contoso.com>").0, 250);
    assert_eq!(c.cmd("DATA").0, 354);
    let line = [b"y".repeat(998).as_slice(), b"\r\n"].concat();
    c.send(&[b"Subject: large\r\n\r\n".as_slice(), &line.repeat(1500)].concat());
    let data = server.data_dir.join("spool/data");
    let start = Instant::now();
    while std::fs::read_dir(&data).unwrap().count() == 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "no data file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let moved = server.data_dir.join("spool/data.moved");
    std::fs::rename(&data, &moved).unwrap();
    c.send(b".\r\n");
    let (code, text) = c.reply();
    assert_eq!(
        code / 100,
        4,
        "a message that was not synced: {code} {text}"
    );

    // Staying up would refuse every message until someone restarted it: it stops instead.
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still running with a spool that cannot sync"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(1));

    std::fs::rename(&moved, &data).unwrap();
    let server = restart(&server.data_dir);
    let (code, received) = get(&server.data_dir, &before, true);
    assert_eq!(code, Some(0));
    assert!(
        received.ends_with(b"hi\r\n"),
        "acknowledged before the failure"
    );
    let mut c = Client::greeted(server.port);
    let after = send_data(
        &mut c,
        b"From: a@contoso.com\r\nSubject: after\r\n\r\nagain\r\n",
    );
    wait_for_state(&server.data_dir, &after, "archived");
}

/// STARTTLS, then a handshake that trusts only `trusted` (PEM): whether the server's
/// certificate is that one.
fn handshake_trusting(port: u16, trusted: &str) -> Result<(), String> {
    handshake_offering(
        port,
        trusted,
        rustls::crypto::ring::default_provider(),
        rustls::DEFAULT_VERSIONS,
    )
    .map(|_| ())
}

/// STARTTLS, then a handshake that trusts only `trusted` (PEM), offering `client`'s suites in
/// its order for `versions`: the suite the two settled on.
fn handshake_offering(
    port: u16,
    trusted: &str,
    client: rustls::crypto::CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::CipherSuite, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut c = Client::greeted(port);
    assert_eq!(c.cmd("STARTTLS").0, 220);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(trusted.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(client))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tls =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut c.stream).map_err(|e| e.to_string())?;
    }
    Ok(tls.negotiated_cipher_suite().unwrap().suite())
}

/// A certificate and key file pair for `localhost`, as an operator configures them.
struct CertificateFiles {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl CertificateFiles {
    fn in_dir(name: &str) -> CertificateFiles {
        let files = temp_dir(name);
        CertificateFiles {
            cert: files.join("cert.pem"),
            key: files.join("key.pem"),
        }
    }

    /// Writes a new certificate, and its key when `with_key`; returns the certificate's PEM.
    fn install(&self, with_key: bool) -> String {
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&self.cert, pair.cert.pem()).unwrap();
        if with_key {
            std::fs::write(&self.key, pair.signing_key.serialize_pem()).unwrap();
        }
        pair.cert.pem()
    }

    /// The `[server]` settings naming these files.
    fn settings(&self) -> String {
        format!(
            "tls_certificate = \"{}\"\ntls_private_key = \"{}\"",
            self.cert.display(),
            self.key.display()
        )
    }
}

#[test]
fn the_server_picks_aes_128_gcm_whatever_the_client_prefers_and_takes_what_it_offers() {
    use rustls::CipherSuite as Suite;
    use rustls::version::{TLS12, TLS13};
    let files = CertificateFiles::in_dir("cipher-suite-files");
    let trusted = files.install(true);
    let server = start(
        "cipher-suite",
        &files.settings(),
        "additional_source_ip_ranges = [\"127.0.0.0/8\"]",
    );
    // rustls' own client order puts AES-256-GCM first, as Windows' does.
    let default = rustls::crypto::ring::default_provider;
    assert_eq!(
        default().cipher_suites[0].suite(),
        Suite::TLS13_AES_256_GCM_SHA384
    );
    for (versions, expected) in [
        (&[&TLS13][..], Suite::TLS13_AES_128_GCM_SHA256),
        (
            &[&TLS12][..],
            Suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
    ] {
        let suite = handshake_offering(server.port, &trusted, default(), versions).unwrap();
        assert_eq!(suite, expected, "{versions:?}");
    }
    // A client without AES-128 still gets a suite it offers.
    let mut only_256 = default();
    only_256
        .cipher_suites
        .retain(|s| s.suite() == Suite::TLS13_AES_256_GCM_SHA384);
    let suite = handshake_offering(server.port, &trusted, only_256, &[&TLS13]).unwrap();
    assert_eq!(suite, Suite::TLS13_AES_256_GCM_SHA384);
}

#[test]
fn sighup_reloads_the_tls_certificate_and_an_unusable_pair_keeps_the_current_one() {
    let files = CertificateFiles::in_dir("reload-cert-files");
    let first = files.install(true);
    let server = start(
        "reload-cert",
        &files.settings(),
        "additional_source_ip_ranges = [\"127.0.0.0/8\"]",
    );
    let hangup = || {
        let sent = Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    handshake_trusting(server.port, &first).expect("the configured certificate");

    // Renewed: new clients get the new certificate, without a restart.
    let second = files.install(true);
    hangup();
    server.wait_for_log("TLS certificate reloaded", 1);
    handshake_trusting(server.port, &second).expect("the renewed certificate");
    let old = handshake_trusting(server.port, &first);
    assert!(old.is_err(), "still the old certificate");

    // A certificate whose key is not there yet (renewal half done): refused, the current
    // pair stays, and the server goes on.
    files.install(false);
    hangup();
    server.wait_for_log("TLS certificate not reloaded", 1);
    handshake_trusting(server.port, &second).expect("the current certificate stays");
}

#[test]
fn a_damaged_as_received_copy_is_reported_as_damage_not_as_an_unknown_id() {
    let server = start_clear_text("damaged-copy");
    let mut c = Client::greeted(server.port);
    let id = send_data(&mut c, b"Subject: kept\r\n\r\nthe-marker-line\r\n");
    assert_eq!(get(&server.data_dir, &id, true).0, Some(0));
    let data_dir = server.data_dir.clone();
    drop(server);
    // One byte of the message, in its commit record, changed on disk: its CRC no longer holds.
    let log = std::fs::read_dir(data_dir.join("spool/log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes
        .windows(15)
        .position(|w| w == b"the-marker-line")
        .unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&log, bytes).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_journal-server"))
        .args([
            "get",
            "--data-dir",
            data_dir.to_str().unwrap(),
            &id,
            "--as-received",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("as-received copy cannot be read"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "damaged bytes written out");
    assert_eq!(
        get(&data_dir, "1A0000000000000F", true).0,
        Some(1),
        "unknown stays 1"
    );
}

#[test]
fn queue_ids_go_on_after_the_newest_item_in_the_archive() {
    let server = start_clear_text("ids");
    let mut c = Client::greeted(server.port);
    let first = send_data(&mut c, b"Subject: first\r\n\r\nhi\r\n");
    let data_dir = server.data_dir.clone();
    let db = rusqlite::Connection::open(data_dir.join("archive.sqlite3")).unwrap();
    let stored = |db: &rusqlite::Connection| {
        db.query_row("SELECT COUNT(*) FROM items WHERE id = ?1", [&first], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
            == 1
    };
    let start = Instant::now();
    while !stored(&db) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{first} never stored"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(c);
    drop(server);
    // The archive's newest item an hour ahead of this clock, as after the clock went back (the
    // spool's live segments, which recovery reads, know nothing newer than `first`).
    let ahead = format!(
        "{:016X}",
        u64::from_str_radix(&first, 16).unwrap() + (3_600_000 << 20)
    );
    db.execute("UPDATE items SET id = ?1 WHERE id = ?2", [&ahead, &first])
        .unwrap();
    drop(db);

    let server = restart(&data_dir);
    let mut c = Client::greeted(server.port);
    let next = send_data(&mut c, b"Subject: next\r\n\r\nhi\r\n");
    assert!(next > ahead, "{next} repeats or precedes {ahead}");
}
