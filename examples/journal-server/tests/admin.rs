//! The operator's view on a real server: `/metrics`, `/healthz`, `/readyz`, the journaling
//! page (with and without the token, and in a real browser: Debian's headless chromium),
//! and connector alerts delivered to a local webhook that fails its first attempts, across
//! a `kill -9`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::{http, metric as sample};

const FIXTURE: &str = "onprem_to_cc_bcc_expanded_forwarded_onbehalf.eml";
const TOKEN: &str = "0123456789abcdef-admin-token";

fn fixture() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/corpus/eej/synthetic")
            .join(FIXTURE),
    )
    .unwrap()
}

fn fresh(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("journal-admin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until `status` shows `id` archived.
fn wait_archived(data: &Path, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = common::status_json(data);
        let item = status["queue"]["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["id"] == id)
            .cloned();
        if let Some(item) = item.filter(|i| i["state"] == "archived") {
            return item;
        }
        assert!(Instant::now() < deadline, "{id} never archived: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A RCPT the server refuses; its reply code.
fn refused_recipient(port: u16) -> u16 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut reply = || loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.as_bytes().get(3) == Some(&b' ') {
            return line;
        }
    };
    reply();
    stream
        .write_all(b"EHLO client.contoso.com\r\nMAIL FROM:<>\r\nRCPT TO:<nobody@example.org>\r\n")
        .unwrap();
    reply();
    reply();
    let refused = reply();
    let _ = stream.write_all(b"QUIT\r\n");
    refused[..3].parse().unwrap()
}

#[test]
fn metrics_health_and_the_page_with_a_token() {
    let dir = fresh("token");
    let data = dir.join("data");
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let config = common::contoso_config(
        &dir,
        "",
        "description = \"Microsoft 365\"\ndelivery_wait_attempts = 1",
        &format!("[admin]\ntoken_file = \"{}\"\n", token_file.display()),
    );
    let (_server, smtp, admin) =
        common::serve_with_admin(&config, &["--match-interval-seconds", "1"]);
    let id = common::send(smtp, &fixture());
    let item = wait_archived(&data, &id);
    let code = refused_recipient(smtp);
    assert!((500..600).contains(&code), "{code}");

    assert_eq!(http(admin, "GET", "/healthz", &[], "").0, 200);
    let (status, _, body) = http(admin, "GET", "/readyz", &[], "");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    assert_eq!(http(admin, "POST", "/healthz", &[], "").0, 405);
    assert_eq!(http(admin, "GET", "/nothing", &[], "").0, 404);

    let (status, head, metrics) = http(admin, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    let definition = "{definition=\"Microsoft 365\"}";
    let size = fixture().len() as f64;
    for (name, want) in [
        (
            format!("mailjournal_messages_accepted_total{definition}"),
            1.0,
        ),
        (
            format!("mailjournal_bytes_accepted_total{definition}"),
            size,
        ),
        (
            format!("mailjournal_messages_rejected_total{{code=\"{code}\"}}"),
            1.0,
        ),
        (
            "mailjournal_queue_items{state=\"archived\"}".to_owned(),
            1.0,
        ),
        (format!("mailjournal_connector_up{definition}"), 1.0),
        ("mailjournal_commit_duration_seconds_count".to_owned(), 1.0),
        ("mailjournal_tls_sessions_total".to_owned(), 0.0),
        ("mailjournal_archive_lag_seconds".to_owned(), 0.0),
    ] {
        assert_eq!(sample(&metrics, &name), Some(want), "{name} in\n{metrics}");
    }
    // The refusing session has ended; this scrape's own connection is HTTP, not SMTP.
    assert_eq!(sample(&metrics, "mailjournal_sessions_active"), Some(0.0));
    let last = sample(
        &metrics,
        &format!("mailjournal_connector_last_message_timestamp_seconds{definition}"),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - 60.0..=now).contains(&last), "{last} vs {now}");
    assert!(sample(&metrics, "mailjournal_spool_bytes{segments=\"live\"}").unwrap() > size);

    // Without the token: the definitions and the states, no address of the mail.
    let sender = item["sender"].as_str().unwrap();
    let (status, head, page) = http(admin, "GET", "/", &[], "");
    assert_eq!(status, 200);
    assert!(head.contains("text/html"));
    assert!(
        page.contains(
            "<td>Microsoft 365</td><td>journaling@journal.contoso.com</td><td class=\"up\">up</td>"
        ),
        "{page}"
    );
    assert!(page.contains(&format!("<a href=\"/item/{id}\">")));
    assert!(!page.contains(sender), "{page}");
    let (_, _, item_page) = http(admin, "GET", &format!("/item/{id}"), &[], "");
    assert!(!item_page.contains("legal@contoso.com"));

    // With it: the queue details as `status` shows them, and the archived message.
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (_, _, page) = http(admin, "GET", "/", &[&bearer], "");
    let recipient = item["recipient"].as_str().unwrap();
    assert!(
        page.contains(&format!("<td>{sender}</td><td>{recipient}</td>")),
        "{page}"
    );
    let (status, _, item_page) = http(admin, "GET", &format!("/item/{id}"), &[&bearer], "");
    assert_eq!(status, 200);
    for text in [
        "Q3 numbers",
        "<td>legal@contoso.com</td><td>bcc</td>",
        "auditors@contoso.com",
    ] {
        assert!(item_page.contains(text), "{text} in {item_page}");
    }
    assert_eq!(
        http(admin, "GET", "/item/00000000000000FF", &[&bearer], "").0,
        404
    );
    let wrong = format!("Authorization: Bearer {TOKEN}x");
    assert!(!http(admin, "GET", "/", &[&wrong], "").2.contains(sender));

    // The page's form: a wrong token is refused, the right one sets the cookie.
    let form = "Content-Type: application/x-www-form-urlencoded";
    assert_eq!(http(admin, "POST", "/login", &[form], "token=guess").0, 403);
    let (status, head, _) = http(admin, "POST", "/login", &[form], &format!("token={TOKEN}"));
    assert_eq!(status, 303);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("mailjournal_admin="));
    let (_, _, page) = http(admin, "GET", "/", &[&format!("Cookie: {cookie}")], "");
    assert!(page.contains(sender));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn readyz_says_why_mail_should_go_elsewhere() {
    let dir = fresh("ready");
    // More free space asked for than any disk has: every message would be answered 452.
    let config = common::contoso_config(
        &dir,
        "free_space_reserve_bytes = 1000000000000000000",
        "description = \"Microsoft 365\"",
        "",
    );
    let (_server, _, admin) = common::serve_with_admin(&config, &[]);
    let (status, _, body) = http(admin, "GET", "/readyz", &[], "");
    assert_eq!(status, 503);
    assert!(body.contains("below the reserve"), "{body}");
    assert_eq!(http(admin, "GET", "/healthz", &[], "").0, 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Debian's chromium, headless, as this machine's probe runs it; `None` when absent.
fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("MAILJOURNAL_REQUIRE_BROWSER").is_none(),
            "MAILJOURNAL_REQUIRE_BROWSER is set but chromium is not installed"
        );
        eprintln!(
            "chromium not installed: the page is not checked in a browser (apt-get install chromium)"
        );
    }
    found
}

/// The DOM chromium built from `url`.
fn dump_dom(browser: &Path, profile: &Path, url: &str) -> String {
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_page_in_a_real_browser() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = fresh("browser");
    let data = dir.join("data");
    let config = common::contoso_config(
        &dir,
        "",
        "description = \"Microsoft 365\"\ndelivery_wait_attempts = 1",
        "[[journal]]\ndescription = \"On-premises (quiet)\"\nservice_email_address = \"onprem@journal.contoso.com\"\n",
    );
    let (_server, smtp, admin) =
        common::serve_with_admin(&config, &["--match-interval-seconds", "1"]);
    let id = common::send(smtp, &fixture());
    let item = wait_archived(&data, &id);
    let dom = dump_dom(
        &browser,
        &dir.join("profile"),
        &format!("http://127.0.0.1:{admin}/"),
    );
    // Chromium serialises the DOM it built, not the bytes sent: tables gain <tbody>.
    for text in [
        "<title>Archive | Journaling</title>",
        "<td>Microsoft 365</td><td>journaling@journal.contoso.com</td><td class=\"up\">up</td>",
        "<td>On-premises (quiet)</td><td>onprem@journal.contoso.com</td><td class=\"never_seen\">never_seen</td><td>never</td>",
        "<th>archived</th>",
        &format!("<a href=\"/item/{id}\"><code>{id}</code></a></td><td>archived</td>"),
        &format!("<td>{}</td>", item["sender"].as_str().unwrap()),
    ] {
        assert!(dom.contains(text), "{text} not in the DOM:\n{dom}");
    }
    assert!(dom.contains("<tbody>"), "not a DOM from a browser:\n{dom}");
    let dom = dump_dom(
        &browser,
        &dir.join("profile"),
        &format!("http://127.0.0.1:{admin}/item/{id}"),
    );
    for text in [
        "Q3 numbers",
        "<td>legal@contoso.com</td><td>bcc</td>",
        "sales@contoso.com",
    ] {
        assert!(dom.contains(text), "{text} not in the item's DOM:\n{dom}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A webhook on 127.0.0.1 that answers 500 to its first `failures` requests and 204 after;
/// every request body it was sent, with the answer it got.
struct Webhook {
    port: u16,
    seen: Arc<Mutex<Vec<(u16, serde_json::Value)>>>,
}

impl Webhook {
    fn start(listener: TcpListener, failures: usize) -> Webhook {
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                assert!(request_line.starts_with("POST /hook "), "{request_line}");
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let mut seen = record.lock().unwrap();
                let code = if seen.len() < failures { 500 } else { 204 };
                seen.push((code, serde_json::from_slice(&body).unwrap()));
                drop(seen);
                let _ = stream.write_all(
                    format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                );
            }
        });
        Webhook { port, seen }
    }

    /// Waits for a delivered alert (answered 204) to `new_status` beyond the first `after`
    /// requests; its document.
    fn delivered(
        &self,
        new_status: &str,
        after: usize,
        within: Duration,
    ) -> (usize, serde_json::Value) {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if let Some((i, (_, alert))) = seen
                .iter()
                .enumerate()
                .skip(after)
                .find(|(_, (code, a))| *code == 204 && a["new_status"] == new_status)
            {
                return (i, alert.clone());
            }
            assert!(Instant::now() < deadline, "no {new_status} alert: {seen:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn alert_config(dir: &Path, port: u16) -> PathBuf {
    common::contoso_config(
        dir,
        "",
        "description = \"Microsoft 365\"\nperiod_of_inactivity_allowed_minutes = 1",
        &format!("[[alert]]\nwebhook_url = \"http://127.0.0.1:{port}/hook\"\n"),
    )
}

#[test]
fn connector_changes_reach_a_failing_webhook_in_order() {
    let dir = fresh("alerts");
    let webhook = Webhook::start(TcpListener::bind("127.0.0.1:0").unwrap(), 2);
    let config = alert_config(&dir, webhook.port);
    let (_server, smtp, _) = common::serve_with_admin(&config, &[]);
    // A never-seen connector's first message.
    common::send(smtp, &fixture());
    let (i, up) = webhook.delivered("up", 0, Duration::from_secs(30));
    let seen = webhook.seen.lock().unwrap().clone();
    assert_eq!(i, 2, "two failed attempts, then delivered: {seen:?}");
    assert!(seen.iter().all(|(_, a)| a["id"] == up["id"]), "{seen:?}");
    assert_eq!(up["old_status"], "never_seen");
    assert_eq!(up["definition"], "Microsoft 365");
    assert_eq!(
        up["service_email_address"],
        "journaling@journal.contoso.com"
    );
    assert!(up["last_message_at"].is_string());
    // A minute without mail: down, with the same last message time.
    let (i, down) = webhook.delivered("down", i + 1, Duration::from_secs(100));
    assert_eq!(down["old_status"], "up");
    assert_eq!(down["last_message_at"], up["last_message_at"]);
    // And up again with the next message.
    common::send(smtp, &fixture());
    let (_, again) = webhook.delivered("up", i + 1, Duration::from_secs(30));
    assert_eq!(again["old_status"], "down");
    assert_ne!(again["id"], up["id"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_pending_alert_survives_kill_9() {
    let dir = fresh("durable");
    // A port with no listener now (connections refused), taken by the webhook later.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = alert_config(&dir, port);
    let pending = dir.join("data/alerts/pending");
    let watch = dir.join("data/alerts/connectors.json");
    let (server, smtp, _) = common::serve_with_admin(&config, &[]);
    common::send(smtp, &fixture());
    // Killed once the alert is pending and the status it follows is recorded: killed between
    // the two writes, the server tells the change again after the restart (at least once, by
    // design), and this test is about the pending alert, not that window.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&pending).map_or(0, |d| d.count()) == 0
        || !std::fs::read_to_string(&watch).is_ok_and(|w| w.contains("\"status\":\"up\""))
    {
        assert!(Instant::now() < deadline, "no alert pending");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server); // SIGKILL
    let webhook = Webhook::start(TcpListener::bind(("127.0.0.1", port)).unwrap(), 0);
    let (_server, _, _) = common::serve_with_admin(&config, &[]);
    let (_, up) = webhook.delivered("up", 0, Duration::from_secs(30));
    assert_eq!(up["old_status"], "never_seen");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&pending).unwrap().count() != 0 {
        assert!(
            Instant::now() < deadline,
            "the delivered alert is still pending"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Told once: the status it followed was recorded with it.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(webhook.seen.lock().unwrap().len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
