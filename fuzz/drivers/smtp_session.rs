//! Arbitrary client bytes, split into arbitrary chunks and interleaved with arbitrary host
//! decisions (TLS established, commit outcomes, timeouts, shutdown), through one session.
//! Invariants: never panics; every reply line is CRLF-terminated, at most 512 octets, and
//! starts with a three-digit code and ' ' or '-'; `250 … queued as` appears only after the
//! host committed; a closed session writes nothing more; message data only flows between a
//! MessageStart and its end.

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
    let mut s = Session::new(Arc::new(config), policy(), "127.0.0.1".parse().expect("ip"));
    let mut awaiting_commit = false;
    let mut in_message = false;
    let mut committed = 0usize;
    let mut closed_seen = false;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
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
                    0 => s.committed(&format!("Q{committed}")),
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
        let queued = out.windows(12).filter(|w| w == b"queued as Q").count();
        assert!(queued <= 1);
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
