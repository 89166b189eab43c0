//! Arbitrary client bytes, split into arbitrary chunks and interleaved with arbitrary host
//! decisions (TLS established, commit outcomes, timeouts, shutdown), through one session.
//! Invariants: never panics; every reply line is CRLF-terminated, at most 512 octets, and
//! starts with a three-digit code and ' ' or '-'; `250 … queued as ID` appears only in the
//! step where the host reported that commit, with the id it gave, once; a closed session
//! writes nothing more; message data only flows between a MessageStart and its end.
//!
//! With bit 2 of the first byte set, the input after the second byte is the content of one
//! DATA transaction (fed in chunks of a size the second byte picks) after a valid envelope;
//! then the framing invariant holds too: the message ends exactly at the first CRLF.CRLF
//! (the data starts at a line start), and the bytes handed to the host are the content up to
//! there with one leading dot removed from each line that starts after a CRLF.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use mailjournal_definition::{Policy, provision};
use mailjournal_smtp::{Event, Session, SessionConfig, TlsInfo};

fn policy() -> Arc<Policy> {
    static POLICY: OnceLock<Arc<Policy>> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            let mut config = provision::starter_config("contoso.com").expect("starter config");
            let j = &mut config.journal[0];
            j.additional_source_ip_ranges = vec!["127.0.0.0/8".into()];
            j.use_smtp_authentication = true;
            j.password = "correct-horse-battery-staple".into();
            let mut open = j.clone();
            open.description = "open".into();
            open.service_email_address = "open@journal.contoso.com".into();
            open.encrypted = false;
            open.use_smtp_authentication = false;
            open.password.clear();
            config.journal.push(open);
            Arc::new(Policy::from_config(&config).expect("valid policy").0)
        })
        .clone()
}

fn check_output(out: &[u8]) {
    for line in out.split_inclusive(|b| *b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "reply line without CRLF");
        assert!(
            line.len() <= 512 && line.len() >= 6,
            "reply line length {}",
            line.len()
        );
        assert!(line[..3].iter().all(u8::is_ascii_digit) && (line[3] == b' ' || line[3] == b'-'));
    }
}

/// The content a DATA transaction must hand over for `content` (what follows `DATA\r\n`):
/// up to the first CRLF.CRLF, unstuffed; `None` when the content never ends. Written the
/// plain way, byte by byte, to check the session's scanner against.
fn unstuffed(content: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut line_start = true;
    let mut i = 0;
    while i < content.len() {
        if line_start {
            if content[i..].starts_with(b".\r\n") {
                return Some(out);
            }
            if content[i] == b'.' {
                i += 1;
                line_start = false;
                continue;
            }
        }
        out.push(content[i]);
        line_start = content[i] == b'\n'
            && out.len() >= 2
            && out[out.len() - 2] == b'\r'
            && i >= 1
            && content[i - 1] == b'\r';
        i += 1;
    }
    None
}

/// One DATA transaction with fuzzed content: the framing invariant.
fn run_data(config: SessionConfig, chunking: u8, content: &[u8]) {
    let mut s = Session::new(Arc::new(config), policy(), "127.0.0.1".parse().expect("ip"));
    let envelope =
        b"EHLO fuzz.example\r\nMAIL FROM:<>\r\nRCPT TO:<open@journal.contoso.com>\r\nDATA\r\n";
    let mut data = Vec::new();
    let (mut completed, mut aborted) = (false, false);
    let mut drain = |s: &mut Session, completed: &mut bool, aborted: &mut bool| {
        check_output(&s.take_output());
        while let Some(event) = s.poll_event() {
            match event {
                Event::MessageData(bytes) => data.extend_from_slice(&bytes),
                Event::MessageComplete { .. } => *completed = true,
                Event::MessageAborted(_) => *aborted = true,
                _ => {}
            }
        }
    };
    assert_eq!(
        s.feed(envelope),
        envelope.len(),
        "the envelope is taken whole"
    );
    drain(&mut s, &mut completed, &mut aborted);
    let size = usize::from(chunking % 64) + 1;
    for chunk in content.chunks(size) {
        if completed || aborted {
            break;
        }
        s.feed(chunk);
        drain(&mut s, &mut completed, &mut aborted);
    }
    if aborted {
        return; // refused (too large, bare line endings): nothing is handed over as a message
    }
    let expected = unstuffed(content);
    assert_eq!(
        completed,
        expected.is_some(),
        "the message ended elsewhere than at the first CRLF.CRLF"
    );
    if let Some(expected) = expected {
        assert!(
            data == expected,
            "the content handed over is not the unstuffed data"
        );
        s.committed("Q1");
        let out = s.take_output();
        check_output(&out);
        assert!(
            out.windows(26).any(|w| w == b"250 2.0.0 Ok: queued as Q1"),
            "no 250 for the commit"
        );
    }
}

/// Runs one fuzz input; panics when an invariant breaks.
pub(crate) fn run(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let config = SessionConfig {
        max_message_size: 4096,
        reject_bare_line_endings: flags & 1 != 0,
        tls_available: flags & 2 == 0,
        max_pending_input: 1024,
        ..SessionConfig::default()
    };
    if flags & 4 != 0 {
        if let Some((&chunking, content)) = rest.split_first() {
            run_data(config, chunking, content);
        }
        return;
    }
    let mut s = Session::new(Arc::new(config), policy(), "127.0.0.1".parse().expect("ip"));
    let mut awaiting_commit = false;
    let mut in_message = false;
    let mut committed = 0usize;
    let mut closed_seen = false;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let mut reported = None;
        match op % 8 {
            0..=3 => {
                let len = (op as usize / 8 + 1).min(rest.len());
                let (chunk, tail) = rest.split_at(len);
                rest = tail;
                let taken = s.feed(chunk);
                assert!(taken <= chunk.len());
                if taken < chunk.len() {
                    assert!(awaiting_commit, "input refused outside a commit wait");
                }
            }
            4 => s.tls_established(TlsInfo {
                version: "TLSv1.3".into(),
                cipher: "x".into(),
            }),
            5 if awaiting_commit => {
                committed += 1;
                awaiting_commit = false;
                match op / 8 % 3 {
                    0 => {
                        s.committed(&format!("Q{committed}"));
                        reported = Some(committed);
                    }
                    1 => s.commit_failed(),
                    _ => s.storage_full(),
                }
            }
            6 => s.on_timeout(),
            7 if op > 200 => s.shutdown(),
            _ => {}
        }
        let out = s.take_output();
        if closed_seen {
            assert!(out.is_empty(), "output after close");
        }
        check_output(&out);
        let queued = out.windows(10).filter(|w| w == b"queued as ").count();
        match reported {
            // The reply to this commit, with its id (a closed session says nothing).
            Some(n) => {
                let line = format!("250 2.0.0 Ok: queued as Q{n}\r\n");
                assert!(queued <= 1, "more than one 250 for one commit");
                assert!(
                    queued == 0 || out.windows(line.len()).any(|w| w == line.as_bytes()),
                    "a 250 with another id than the host's"
                );
            }
            None => assert_eq!(queued, 0, "`queued as` before the host reported a commit"),
        }
        while let Some(event) = s.poll_event() {
            match event {
                Event::MessageStart(_) => {
                    assert!(!in_message);
                    in_message = true;
                }
                Event::MessageData(bytes) => assert!(in_message && !bytes.is_empty()),
                Event::MessageComplete { .. } => {
                    assert!(in_message);
                    in_message = false;
                    awaiting_commit = true;
                }
                Event::MessageAborted(_) => in_message = false,
                Event::Rejected(reply) => {
                    assert!((400..600).contains(&reply.code), "rejected with {reply}");
                    assert!(!closed_seen, "a refusal after close");
                }
                Event::Close => closed_seen = true,
                Event::StartTls | Event::AuthFailure { .. } => {}
            }
        }
    }
}
