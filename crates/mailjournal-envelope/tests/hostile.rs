//! Hostile and broken input: every case returns an item with a reason, never panics, and
//! every span it reports lies inside the input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailjournal_envelope::{Format, JournalItem, ParseOptions, StepDown};
use proptest::prelude::*;

const REPORT: &[u8] = b"X-MS-Journal-Report:\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nSender: a@x.com\r\nMessage-Id: <1@x>\r\nTo: c@x.com\r\n\
--b\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <1@x>\r\nSubject: s\r\n\r\nbody\r\n--b--\r\n";

fn check_invariants(input: &[u8], item: &JournalItem<'_>) {
    for span in [item.original(), item.clear_text()].into_iter().flatten() {
        assert!(
            span.offset + span.length <= input.len(),
            "span {span:?} outside {} bytes",
            input.len()
        );
    }
    if item.format() == Format::Envelope {
        assert!(
            item.sender().is_some(),
            "an envelope item always has a sender"
        );
        assert!(item.original().is_some());
    }
    if item.format() == Format::Eml {
        assert_eq!(item.original().unwrap().length, input.len());
    }
    for options in [
        ParseOptions {
            prefer_clear_text_version: true,
            remove_journal_headers: true,
            ..Default::default()
        },
        ParseOptions::default(),
    ] {
        let archived = item.archived_message(&options);
        assert!(archived.len() <= input.len() * 2 + 16);
    }
}

fn parse(input: &[u8]) -> JournalItem<'_> {
    let item = JournalItem::parse(input, &ParseOptions::default());
    check_invariants(input, &item);
    item
}

#[test]
fn the_reference_report_parses() {
    let item = parse(REPORT);
    assert_eq!(item.format(), Format::Envelope);
    assert_eq!(
        item.original_bytes().unwrap(),
        b"Message-ID: <1@x>\r\nSubject: s\r\n\r\nbody"
    );
}

#[test]
fn empty_and_blank_input() {
    assert_eq!(parse(b"").step_down(), Some(StepDown::EmptyInput));
    assert_eq!(
        parse(b"\r\n\r\n  \n").step_down(),
        Some(StepDown::EmptyInput)
    );
}

#[test]
fn every_truncation_of_a_report_is_handled() {
    for len in 0..REPORT.len() {
        let item = parse(&REPORT[..len]);
        if item.format() == Format::Envelope {
            assert!(
                item.warnings()
                    .iter()
                    .any(|w| w.contains("closing boundary"))
                    || len >= REPORT.len() - 8
            );
        }
    }
}

#[test]
fn step_down_reasons() {
    let cases: [(&[u8], StepDown); 7] = [
        (b"X-MS-Journal-Report:\r\nContent-Type: text/plain\r\n\r\nSender: a@x.com\r\n", StepDown::NotMultipart),
        (b"X-MS-Journal-Report:\r\nContent-Type: multipart/mixed\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n", StepDown::NotMultipart),
        (
            b"X-MS-Journal-Report:\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nA: 1\r\n\r\nx\r\n--b\r\nContent-Type: text/plain\r\n\r\nSender: a@x.com\r\n--b--\r\n",
            StepDown::NoEnvelopePart,
        ),
        (b"X-MS-Journal-Report:\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nSender: a@x.com\r\n--b--\r\n", StepDown::NoOriginalPart),
        (
            b"X-MS-Journal-Report:\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nSubject: no sender\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nA: 1\r\n\r\nx\r\n--b--\r\n",
            StepDown::NoSender,
        ),
        (
            b"X-MS-Journal-Report:\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nSender: a@x.com\r\n--b\r\nContent-Type: application/ms-tnef; name=winmail.dat\r\n\r\nxx\r\n--b--\r\n",
            StepDown::TnefOriginal,
        ),
        (
            b"X-MS-Journal-Report:\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nSender: a@x.com\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"original.msg\"\r\n\r\nxx\r\n--b--\r\n",
            StepDown::TnefOriginal,
        ),
    ];
    for (input, reason) in cases {
        let item = parse(input);
        assert_eq!(
            item.format(),
            Format::Eml,
            "{}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(
            item.step_down(),
            Some(reason),
            "{}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn crosspremises_bcc_does_not_mark_a_report() {
    let list_post = b"X-MS-Exchange-CrossPremises-BCC:\r\nX-MS-Exchange-CrossPremises-Processed-By-Journaling: Journal Agent\r\nFrom: a@x.com\r\nTo: list@y.org\r\n\r\nhi\r\n";
    assert_eq!(
        parse(list_post).step_down(),
        Some(StepDown::NoJournalHeader)
    );
    let org = b"X-MS-Exchange-Organization-Journal-Report:\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nSender: a@x.com\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nA: 1\r\n\r\nx\r\n--b--\r\n";
    assert_eq!(parse(org).format(), Format::Envelope);
}

#[test]
fn ten_thousand_nested_multiparts() {
    let mut message =
        b"X-MS-Journal-Report:\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n".to_vec();
    for i in 1..10_000 {
        message.extend_from_slice(
            format!(
                "--b{}\r\nContent-Type: multipart/mixed; boundary=b{i}\r\n\r\n",
                i - 1
            )
            .as_bytes(),
        );
    }
    let item = parse(&message);
    assert_eq!(item.format(), Format::Eml);
    assert_eq!(item.step_down(), Some(StepDown::NoEnvelopePart));
    // And as plain EML.
    let item = JournalItem::parse(&message[21..], &ParseOptions::default());
    assert_eq!(item.step_down(), Some(StepDown::NoJournalHeader));
}

#[test]
fn too_many_parts_and_huge_headers() {
    let mut message =
        b"X-MS-Journal-Report:\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
    for _ in 0..1500 {
        message.extend_from_slice(b"--b\r\n\r\nx\r\n");
    }
    assert_eq!(parse(&message).step_down(), Some(StepDown::TooManyParts));

    let mut huge = b"X-MS-Journal-Report:\r\n".to_vec();
    while huge.len() < (1 << 20) + 10 {
        huge.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    huge.extend_from_slice(b"\r\nbody");
    assert_eq!(parse(&huge).step_down(), Some(StepDown::HeaderTooLarge));
}

#[test]
fn ndr_wrapping_an_ndr_is_too_deep() {
    let report = String::from_utf8(REPORT.to_vec()).unwrap();
    let wrap = |inner: &str, b: &str| {
        format!(
            "Content-Type: multipart/report; boundary={b}\r\n\r\n--{b}\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--{b}--\r\n"
        )
    };
    let once = wrap(&report, "n1");
    let item = parse(once.as_bytes());
    assert!(item.unwrapped_ndr());
    assert_eq!(
        item.original_bytes().unwrap(),
        b"Message-ID: <1@x>\r\nSubject: s\r\n\r\nbody"
    );
    // An NDR of an NDR of a report: only one level is unwrapped, with a precise reason.
    let twice = wrap(&once, "n2");
    let item = parse(twice.as_bytes());
    assert_eq!(item.format(), Format::Eml);
    assert_eq!(item.step_down(), Some(StepDown::NestingTooDeep));
}

#[test]
fn mismatched_message_ids_warn() {
    let report = String::from_utf8(REPORT.to_vec())
        .unwrap()
        .replace("Message-ID: <1@x>", "Message-ID: <2@x>");
    let item = parse(report.as_bytes());
    assert_eq!(item.format(), Format::Envelope);
    assert!(
        item.warnings()
            .iter()
            .any(|w| w.contains("differs from the original")),
        "{:?}",
        item.warnings()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let item = parse(&bytes);
        let again = JournalItem::parse(&bytes, &ParseOptions::default());
        prop_assert_eq!(item.recipients(), again.recipients());
    }

    #[test]
    fn mutated_reports_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16)) {
        let mut bytes = REPORT.to_vec();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        parse(&bytes);
    }
}
