//! Properties of the session over random input: chunking never changes the outcome, and
//! client dot-stuffing followed by the session's unstuffing is the identity.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use mailjournal_definition::{Policy, provision};
use mailjournal_smtp::data::dot_stuff;
use mailjournal_smtp::{Event, Session, SessionConfig};
use proptest::prelude::*;

fn session() -> Session {
    let mut config = provision::starter_config("contoso.com").unwrap();
    config.journal[0].additional_source_ip_ranges = vec!["127.0.0.0/8".into()];
    config.journal[0].encrypted = false;
    let (policy, _) = Policy::from_config(&config).unwrap();
    let session_config = SessionConfig {
        max_message_size: 1 << 20,
        ..SessionConfig::default()
    };
    Session::new(
        Arc::new(session_config),
        Arc::new(policy),
        "127.0.0.1".parse().unwrap(),
    )
}

/// Feeds `wire` in the given chunk sizes, committing every complete message at once.
/// Returns every byte written to the client and every message received.
fn run(wire: &[u8], chunks: &[usize]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut s = session();
    let mut output = s.take_output();
    let mut messages = Vec::new();
    let mut current = Vec::new();
    let mut queue_id = 0;
    let mut pos = 0;
    let mut sizes = chunks.iter().cycle();
    while pos < wire.len() && !s.is_closed() {
        let size = (*sizes.next().unwrap()).max(1).min(wire.len() - pos);
        let mut chunk = &wire[pos..pos + size];
        pos += size;
        loop {
            let taken = s.feed(chunk);
            chunk = &chunk[taken..];
            let mut progressed = false;
            while let Some(event) = s.poll_event() {
                match event {
                    Event::MessageStart(_) => current.clear(),
                    Event::MessageData(bytes) => current.extend_from_slice(&bytes),
                    Event::MessageComplete { size } => {
                        assert_eq!(size as usize, current.len());
                        messages.push(std::mem::take(&mut current));
                        queue_id += 1;
                        s.committed(&format!("Q{queue_id}"));
                        progressed = true;
                    }
                    _ => {}
                }
            }
            output.extend_from_slice(&s.take_output());
            if chunk.is_empty() || !progressed {
                break;
            }
        }
    }
    (output, messages)
}

fn transaction_stream(bodies: &[Vec<u8>], bdat: &[bool]) -> Vec<u8> {
    let mut wire = b"EHLO client.example\r\n".to_vec();
    for (body, &chunked) in bodies.iter().zip(bdat.iter().cycle()) {
        wire.extend_from_slice(b"MAIL FROM:<>\r\nRCPT TO:<journaling@journal.contoso.com>\r\n");
        if chunked {
            let half = body.len() / 2;
            wire.extend_from_slice(format!("BDAT {half}\r\n").as_bytes());
            wire.extend_from_slice(&body[..half]);
            wire.extend_from_slice(format!("BDAT {} LAST\r\n", body.len() - half).as_bytes());
            wire.extend_from_slice(&body[half..]);
        } else {
            wire.extend_from_slice(b"DATA\r\n");
            wire.extend_from_slice(&dot_stuff(body));
        }
    }
    wire.extend_from_slice(b"QUIT\r\n");
    wire
}

/// Bodies rich in what matters: dots at line starts, CR and LF in every combination.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b'.'),
            Just(b'\r'),
            Just(b'\n'),
            Just(b'a'),
            any::<u8>()
        ],
        0..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn dot_stuffing_round_trips(bodies in prop::collection::vec(body(), 1..4), bdat in prop::collection::vec(any::<bool>(), 1..4)) {
        let wire = transaction_stream(&bodies, &bdat);
        let (output, messages) = run(&wire, &[wire.len()]);
        prop_assert_eq!(messages.len(), bodies.len(), "{}", String::from_utf8_lossy(&output));
        for ((got, body), &chunked) in messages.iter().zip(&bodies).zip(bdat.iter().cycle()) {
            // DATA adds the CRLF a body lacks (the client's dot-stuffing does), BDAT does not.
            let mut want = body.clone();
            if !chunked && !body.is_empty() && !body.ends_with(b"\r\n") {
                want.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(got, &want);
        }
        prop_assert!(output.ends_with(b"221 2.0.0 Bye\r\n"));
    }

    #[test]
    fn chunk_boundaries_do_not_matter(
        bodies in prop::collection::vec(body(), 1..3),
        bdat in prop::collection::vec(any::<bool>(), 1..3),
        chunks in prop::collection::vec(1usize..40, 1..10),
    ) {
        let wire = transaction_stream(&bodies, &bdat);
        prop_assert_eq!(run(&wire, &chunks), run(&wire, &[wire.len()]));
    }

    #[test]
    fn arbitrary_bytes_keep_replies_well_formed(wire in prop::collection::vec(any::<u8>(), 0..2000), chunks in prop::collection::vec(1usize..64, 1..5)) {
        let (output, _) = run(&wire, &chunks);
        for line in output.split_inclusive(|b| *b == b'\n') {
            prop_assert!(line.ends_with(b"\r\n"));
            prop_assert!(line.len() <= 512);
            prop_assert!(line[..3].iter().all(u8::is_ascii_digit));
            prop_assert!(line[3] == b' ' || line[3] == b'-');
        }
    }
}

/// Refusals reach the host as events with the reply that was sent; accepted commands do not.
#[test]
fn each_refused_command_is_reported_once_with_its_reply() {
    let mut s = session();
    s.take_output();
    s.feed(b"EHLO client\r\nMAIL FROM:<a@contoso.com>\r\nRCPT TO:<someone@example.org>\r\nRCPT TO:<journaling@journal.contoso.com>\r\nNOOP\r\n");
    let output = String::from_utf8(s.take_output()).unwrap();
    let mut rejected = Vec::new();
    while let Some(event) = s.poll_event() {
        if let Event::Rejected(reply) = event {
            rejected.push(reply);
        }
    }
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].code, 550);
    assert_eq!(
        rejected[0].enhanced.map(|e| e.to_string()).as_deref(),
        Some("5.7.1")
    );
    assert!(output.contains(&rejected[0].to_string()), "{output}");
}
