//! Transcript tests: small dialog scripts of client lines and expected replies and events, in
//! the style of Postfix's golden transcripts and chasquid's dialog scripts.
//!
//! Script lines (one scenario per `=== name` section of a file under `tests/transcripts/`):
//!
//! ```text
//! @journal encrypted=false auth=true password=... ranges=127.0.0.1/32,10.0.0.0/8 disabled=true
//! @server size=1000 recipients=2 errors=10 strict tls=false line=1000
//! @peer 127.0.0.2
//! @2nd                 a second definition, second@journal.contoso.com, with the same settings
//! C: EHLO x            client line, CRLF appended
//! C+ raw\r\nbytes      client bytes, \r \n \0 \\ escapes, nothing appended
//! S: 250 2.1.0         the next reply: code, and enhanced code when given
//! S~ STARTTLS          the previous reply's text contains this
//! E: StartTls          the next event's kind (StartTls, MessageStart, MessageComplete,
//!                      MessageAborted, AuthFailure, Close); MessageData events are collected
//! M: bytes             the message bytes collected since MessageStart, escaped
//! !tls  !commit ID  !commit_failed  !storage_full  !timeout  !shutdown  !disk_low  !disk_ok
//! S- none              no reply is pending
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use mailjournal_definition::{Policy, provision};
use mailjournal_smtp::{Event, Session, SessionConfig, TlsInfo};

fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = text.bytes();
    while let Some(b) = chars.next() {
        if b == b'\\' {
            match chars.next() {
                Some(b'r') => out.push(b'\r'),
                Some(b'n') => out.push(b'\n'),
                Some(b'0') => out.push(0),
                Some(b't') => out.push(b'\t'),
                Some(b'\\') => out.push(b'\\'),
                Some(other) => out.extend_from_slice(&[b'\\', other]),
                None => out.push(b'\\'),
            }
        } else {
            out.push(b);
        }
    }
    out
}

struct Harness {
    session: Option<Session>,
    config: SessionConfig,
    journal_edits: Vec<(String, String)>,
    second_journal: bool,
    peer: IpAddr,
    replies: VecDeque<String>,
    last_reply: String,
    events: VecDeque<Event>,
    message: Vec<u8>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            session: None,
            config: SessionConfig {
                hostname: "mx.journal.contoso.com".into(),
                ..SessionConfig::default()
            },
            journal_edits: Vec::new(),
            second_journal: false,
            peer: "127.0.0.1".parse().unwrap(),
            replies: VecDeque::new(),
            last_reply: String::new(),
            events: VecDeque::new(),
            message: Vec::new(),
        }
    }

    fn session(&mut self) -> &mut Session {
        if self.session.is_none() {
            let mut config = provision::starter_config("contoso.com").unwrap();
            let j = &mut config.journal[0];
            j.additional_source_ip_ranges = vec!["127.0.0.1/32".into()];
            j.encrypted = false;
            for (key, value) in &self.journal_edits {
                match key.as_str() {
                    "encrypted" => j.encrypted = value == "true",
                    "auth" => j.use_smtp_authentication = value == "true",
                    "password" => j.password = value.clone(),
                    "disabled" => j.disabled = value == "true",
                    "ranges" => {
                        j.additional_source_ip_ranges =
                            value.split(',').map(str::to_owned).collect()
                    }
                    other => panic!("unknown @journal key {other}"),
                }
            }
            if self.second_journal {
                let mut second = config.journal[0].clone();
                second.description = "second".into();
                second.service_email_address = "second@journal.contoso.com".into();
                config.journal.push(second);
            }
            let (policy, _) = Policy::from_config(&config).unwrap_or_else(|r| panic!("{r}"));
            self.session = Some(Session::new(
                Arc::new(self.config.clone()),
                Arc::new(policy),
                self.peer,
            ));
        }
        self.session.as_mut().unwrap()
    }

    /// Collects output and events from the session.
    fn drain(&mut self) {
        let session = self.session.as_mut().unwrap();
        let out = String::from_utf8(session.take_output()).unwrap();
        let mut current = String::new();
        let mut sent = Vec::new();
        for line in out.split_inclusive("\r\n") {
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            assert!(line.len() <= 512, "reply line over 512 octets: {line:?}");
            let bytes = line.as_bytes();
            assert!(
                bytes.len() >= 5
                    && bytes[..3].iter().all(u8::is_ascii_digit)
                    && (bytes[3] == b' ' || bytes[3] == b'-'),
                "malformed reply line {line:?}"
            );
            current.push_str(line);
            if bytes[3] == b' ' {
                sent.push(current.clone());
                self.replies.push_back(std::mem::take(&mut current));
            }
        }
        assert!(
            current.is_empty(),
            "unterminated multi-line reply {current:?}"
        );
        while let Some(event) = session.poll_event() {
            match event {
                Event::MessageData(bytes) => self.message.extend_from_slice(&bytes),
                // Every refusal is reported once, as the reply that was sent; scripts check
                // the replies themselves.
                Event::Rejected(reply) => {
                    assert!(reply.code >= 400, "a refusal with {reply}");
                    let wire = reply.to_string();
                    let at = sent.iter().position(|s| *s == wire);
                    assert!(
                        at.is_some(),
                        "refusal {wire:?} not among the replies {sent:?}"
                    );
                    if let Some(at) = at {
                        sent.remove(at);
                    }
                }
                Event::MessageStart(_) => {
                    self.message.clear();
                    self.events.push_back(event);
                }
                other => self.events.push_back(other),
            }
        }
    }

    fn run(&mut self, name: &str, script: &str) {
        for (n, raw) in script.lines().enumerate() {
            let line = raw.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{name}, line {}: {line}", n + 1);
            let (tag, arg) = line.split_at(2.min(line.len()));
            let arg = arg.strip_prefix(' ').unwrap_or(arg);
            match tag {
                "@j" => {
                    for kv in line["@journal".len()..].split_whitespace() {
                        let (k, v) = kv.split_once('=').unwrap();
                        self.journal_edits.push((k.into(), v.into()));
                    }
                }
                "@s" => {
                    for kv in line["@server".len()..].split_whitespace() {
                        match kv.split_once('=') {
                            Some(("size", v)) => self.config.max_message_size = v.parse().unwrap(),
                            Some(("recipients", v)) => {
                                self.config.max_recipients = v.parse().unwrap()
                            }
                            Some(("errors", v)) => self.config.max_errors = v.parse().unwrap(),
                            Some(("tls", v)) => self.config.tls_available = v == "true",
                            Some(("line", v)) => {
                                self.config.max_data_line_length = Some(v.parse().unwrap())
                            }
                            None if kv == "strict" => self.config.reject_bare_line_endings = true,
                            _ => panic!("{at}: unknown @server setting"),
                        }
                    }
                }
                "@2" => self.second_journal = true,
                "@p" => self.peer = line["@peer".len()..].trim().parse().unwrap(),
                "C:" => {
                    let mut bytes = unescape(arg);
                    bytes.extend_from_slice(b"\r\n");
                    self.feed(&bytes);
                }
                "C+" => {
                    let bytes = unescape(arg);
                    self.feed(&bytes);
                }
                "S:" => {
                    self.session();
                    self.drain();
                    let reply = self
                        .replies
                        .pop_front()
                        .unwrap_or_else(|| panic!("{at}: no reply"));
                    let mut want = arg.split_whitespace();
                    let code = want.next().unwrap();
                    assert!(reply.starts_with(code), "{at}: got {reply:?}");
                    if let Some(enhanced) = want.next() {
                        let last = reply.lines().last().unwrap();
                        assert_eq!(
                            last.get(4..4 + enhanced.len()),
                            Some(enhanced),
                            "{at}: got {reply:?}"
                        );
                    }
                    self.last_reply = reply;
                }
                "S~" => assert!(
                    self.last_reply.contains(arg),
                    "{at}: last reply was {:?}",
                    self.last_reply
                ),
                "S-" => {
                    self.drain();
                    assert!(
                        self.replies.is_empty(),
                        "{at}: pending replies {:?}",
                        self.replies
                    );
                }
                "E:" => {
                    self.drain();
                    let event = self
                        .events
                        .pop_front()
                        .unwrap_or_else(|| panic!("{at}: no event"));
                    let kind = format!("{event:?}");
                    assert!(kind.starts_with(arg), "{at}: got {kind}");
                }
                "E-" => {
                    self.drain();
                    assert!(
                        self.events.is_empty(),
                        "{at}: pending events {:?}",
                        self.events
                    );
                }
                "M:" => {
                    self.drain();
                    assert_eq!(
                        String::from_utf8_lossy(&self.message),
                        String::from_utf8_lossy(&unescape(arg)),
                        "{at}"
                    );
                }
                "!t" if line == "!tls" => self.session().tls_established(TlsInfo {
                    version: "TLSv1.3".into(),
                    cipher: "TLS13_AES_256_GCM_SHA384".into(),
                }),
                "!t" if line == "!timeout" => self.session().on_timeout(),
                "!c" if line.starts_with("!commit_failed") => self.session().commit_failed(),
                "!c" => self.session().committed(line["!commit".len()..].trim()),
                "!s" if line == "!storage_full" => self.session().storage_full(),
                "!s" if line == "!shutdown" => self.session().shutdown(),
                "!d" if line == "!disk_low" => self.session().set_storage_available(false),
                "!d" if line == "!disk_ok" => self.session().set_storage_available(true),
                _ => panic!("{at}: unknown script line"),
            }
        }
        self.drain();
        assert!(
            self.replies.is_empty(),
            "{name}: unchecked replies at the end: {:?}",
            self.replies
        );
        assert!(
            self.events.is_empty(),
            "{name}: unchecked events at the end: {:?}",
            self.events
        );
    }

    fn feed(&mut self, bytes: &[u8]) {
        let taken = self.session().feed(bytes);
        assert_eq!(
            taken,
            bytes.len(),
            "the session took {taken} of {} bytes",
            bytes.len()
        );
    }
}

#[test]
fn transcripts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut scenarios = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for section in text.split("\n=== ").skip(1) {
            let (title, script) = section.split_once('\n').unwrap_or((section, ""));
            Harness::new().run(&format!("{name}: {title}"), script);
            scenarios += 1;
        }
    }
    assert!(scenarios >= 35, "only {scenarios} scenarios ran");
}
