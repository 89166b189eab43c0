//! Journal reports built with `mail-builder` from random envelopes: the parse must return
//! exactly what was built, whatever the line endings, transfer encoding and charset.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use mailjournal_envelope::{Format, JournalItem, ParseOptions, RecipientField};
use proptest::prelude::*;

/// A recipient line as built: bucket, address, and `(expanded?, source)` when redirected.
type BuiltRecipient = (RecipientField, String, Option<(bool, String)>);

#[derive(Debug, Clone)]
struct Spec {
    sender: String,
    on_behalf_of: Option<String>,
    subject: String,
    message_id: String,
    recipients: Vec<BuiltRecipient>,
    encoding: Encoding,
    latin1: bool,
    lf_only: bool,
    nested: bool,
    clear_text: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    SevenBit,
    QuotedPrintable,
    Base64,
}

fn address() -> impl Strategy<Value = String> {
    (
        "[a-z][a-z0-9._-]{0,12}",
        "[a-z]{1,10}",
        prop::sample::select(vec!["com", "de", "co.uk", "onmicrosoft.com"]),
    )
        .prop_map(|(l, d, t)| format!("{l}@{d}.{t}"))
}

fn field() -> impl Strategy<Value = RecipientField> {
    prop::sample::select(vec![
        RecipientField::To,
        RecipientField::Cc,
        RecipientField::Bcc,
        RecipientField::Recipient,
    ])
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (
            address(),
            prop::option::of(address()),
            "[^\r\n]{0,40}",
            "[a-zA-Z0-9.$_-]{1,30}@[a-z0-9.-]{1,20}",
        ),
        prop::collection::vec(
            (
                field(),
                address(),
                prop::option::of((any::<bool>(), address())),
            ),
            1..12,
        ),
        (
            prop::sample::select(vec![
                Encoding::SevenBit,
                Encoding::QuotedPrintable,
                Encoding::Base64,
            ]),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (sender, on_behalf_of, subject, message_id),
                recipients,
                (encoding, latin1, lf_only, nested, clear_text),
            )| {
                let subject = subject.trim().to_owned();
                // C1 controls are excluded: decoders (like browsers) read ISO-8859-1 as windows-1252.
                let latin1 = latin1
                    && subject
                        .chars()
                        .all(|c| (c as u32) < 0x80 || (0xa0..0x100).contains(&(c as u32)));
                let encoding = if encoding == Encoding::SevenBit && !subject.is_ascii() {
                    Encoding::QuotedPrintable
                } else {
                    encoding
                };
                Spec {
                    sender,
                    on_behalf_of,
                    subject,
                    message_id,
                    recipients,
                    encoding,
                    latin1,
                    lf_only,
                    nested,
                    clear_text,
                }
            },
        )
}

fn field_name(f: RecipientField) -> &'static str {
    match f {
        RecipientField::To => "To",
        RecipientField::Cc => "Cc",
        RecipientField::Bcc => "Bcc",
        RecipientField::Recipient => "Recipient",
    }
}

fn envelope_text(spec: &Spec) -> String {
    let mut text = format!("Sender: {}\r\n", spec.sender);
    if let Some(obo) = &spec.on_behalf_of {
        text += &format!("On-Behalf-Of: {obo}\r\n");
    }
    text += &format!(
        "Subject: {}\r\nMessage-Id: <{}>\r\n",
        spec.subject, spec.message_id
    );
    for (field, address, redirect) in &spec.recipients {
        text += &format!("{}: {address}", field_name(*field));
        if let Some((expanded, source)) = redirect {
            text += &format!(
                ", {}: {source}",
                if *expanded { "Expanded" } else { "Forwarded" }
            );
        }
        text += "\r\n";
    }
    text
}

fn qp(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut col = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            continue;
        }
        if b == b'\n' {
            out.extend_from_slice(b"\r\n");
            col = 0;
            continue;
        }
        let piece = if b == b'='
            || !(b' '..=b'~').contains(&b)
            || (b == b' ' && bytes.get(i + 1).is_none_or(|n| *n == b'\r'))
        {
            format!("={b:02X}").into_bytes()
        } else {
            vec![b]
        };
        if col + piece.len() > 72 {
            out.extend_from_slice(b"=\r\n");
            col = 0;
        }
        col += piece.len();
        out.extend_from_slice(&piece);
    }
    out
}

fn base64(bytes: &[u8]) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    for (n, chunk) in bytes.chunks(3).enumerate() {
        if n > 0 && n % 19 == 0 {
            out.extend_from_slice(b"\r\n");
        }
        let v = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(v >> (18 - 6 * i)) as usize & 63]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

fn original(spec: &Spec, body: &str) -> String {
    let mut m = format!(
        "From: {}\r\nTo: someone@example.com\r\nSubject: original\r\nMessage-ID: <{}>\r\nDate: Mon, 6 May 2024 09:14:58 +0000\r\nMIME-Version: 1.0\r\n",
        spec.sender, spec.message_id
    );
    if spec.nested {
        // A nested message and a report-boundary look-alike mid-line: both are content.
        m += "Content-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n--inner\r\nContent-Type: text/plain\r\n\r\n";
        m += &format!(
            "{body} --mailjournal-report-boundary mid-line\r\n--inner\r\nContent-Type: message/rfc822\r\n\r\n"
        );
        m += "From: x@example.com\r\nMessage-ID: <nested@example.com>\r\n\r\nnested\r\n--inner--\r\n";
    } else {
        m += &format!("Content-Type: text/plain\r\n\r\n{body}\r\n");
    }
    m
}

fn build(spec: &Spec) -> (Vec<u8>, String, Option<String>) {
    let text = envelope_text(spec);
    let charset = if spec.latin1 { "iso-8859-1" } else { "utf-8" };
    let raw: Vec<u8> = if spec.latin1 {
        text.chars().map(|c| c as u32 as u8).collect()
    } else {
        text.into_bytes()
    };
    let (cte, encoded) = match spec.encoding {
        Encoding::SevenBit => ("7bit", raw),
        Encoding::QuotedPrintable => ("quoted-printable", qp(&raw)),
        Encoding::Base64 => ("base64", base64(&raw)),
    };
    let envelope = MimePart::new(
        ContentType::new("text/plain").attribute("charset", charset),
        BodyPart::Binary(encoded.into()),
    )
    .header("Content-Transfer-Encoding", Raw::new(cte));
    let original_text = original(spec, "protected or plain body");
    let clear_text = spec
        .clear_text
        .then(|| original(spec, "decrypted clear text"));
    let mut parts = vec![
        envelope,
        MimePart::new("message/rfc822", original_text.clone()).transfer_encoding("7bit"),
    ];
    if let Some(clear) = &clear_text {
        parts.push(MimePart::new("message/rfc822", clear.clone()).transfer_encoding("7bit"));
    }
    let mut bytes = MessageBuilder::new()
        .from(spec.sender.as_str())
        .to("someone@example.com")
        .subject("report")
        .message_id("00000000-1111@journal.report.generator")
        .header("X-MS-Journal-Report", Raw::new(""))
        .body(MimePart::new(
            ContentType::new("multipart/mixed")
                .attribute("boundary", "mailjournal-report-boundary"),
            parts,
        ))
        .write_to_vec()
        .unwrap();
    let (mut original_text, mut clear_text) = (original_text, clear_text);
    if spec.lf_only {
        bytes = String::from_utf8(bytes)
            .unwrap()
            .replace("\r\n", "\n")
            .into_bytes();
        original_text = original_text.replace("\r\n", "\n");
        clear_text = clear_text.map(|c| c.replace("\r\n", "\n"));
    }
    (bytes, original_text, clear_text)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_returns_what_was_built(spec in spec()) {
        let (bytes, original_text, clear_text) = build(&spec);
        let item = JournalItem::parse(&bytes, &ParseOptions::default());
        prop_assert_eq!(item.format(), Format::Envelope, "{:?} {}", item.step_down(), String::from_utf8_lossy(&bytes));
        prop_assert_eq!(item.sender(), Some(spec.sender.as_str()));
        prop_assert_eq!(item.on_behalf_of(), spec.on_behalf_of.as_deref());
        let subject = (!spec.subject.is_empty()).then_some(spec.subject.as_str());
        prop_assert_eq!(item.subject(), subject.or(Some("original")));
        prop_assert_eq!(item.message_id(), Some(spec.message_id.as_str()));
        let got: Vec<_> = item.recipients().iter().map(|r| {
            let redirect = match (&r.expanded, &r.forwarded) {
                (Some(e), None) => Some((true, e.to_string())),
                (None, Some(f)) => Some((false, f.to_string())),
                _ => None,
            };
            (r.field, r.address.to_string(), redirect)
        }).collect();
        prop_assert_eq!(got, spec.recipients.clone());
        prop_assert_eq!(item.original_bytes().unwrap(), original_text.as_bytes());
        let prefer = ParseOptions { prefer_clear_text_version: true, ..Default::default() };
        match &clear_text {
            Some(clear) => prop_assert_eq!(&*item.archived_message(&prefer), clear.as_bytes()),
            None => prop_assert_eq!(&*item.archived_message(&prefer), original_text.as_bytes()),
        }
        prop_assert!(item.warnings().is_empty(), "{:?}", item.warnings());
    }

    #[test]
    fn removing_journal_headers_changes_only_those_fields(
        keep in prop::collection::vec(("[A-Z][a-z]{1,8}", "[ -~]{0,30}"), 0..6),
        bcc in prop::collection::vec((any::<bool>(), address(), any::<bool>()), 0..4),
        lf in any::<bool>(),
    ) {
        let nl = if lf { "\n" } else { "\r\n" };
        let mut message = String::new();
        let mut expected = String::new();
        for (i, (name, value)) in keep.iter().enumerate() {
            let line = format!("{name}: {value}{nl}");
            message += &line;
            expected += &line;
            if let Some((org, addr, folded)) = bcc.get(i) {
                let name = if *org { "X-MS-Exchange-Organization-BCC" } else { "x-ms-exchange-crosspremises-bcc" };
                message += &format!("{name}: {addr}");
                if *folded { message += &format!(",{nl}\t{addr}"); }
                message += nl;
            }
        }
        message += &format!("{nl}X-MS-Exchange-Organization-BCC: in the body stays{nl}");
        expected += &format!("{nl}X-MS-Exchange-Organization-BCC: in the body stays{nl}");
        let stripped = mailjournal_envelope::item::remove_header_fields(message.as_bytes(), &mailjournal_envelope::item::JOURNAL_HEADERS);
        prop_assert_eq!(String::from_utf8_lossy(&stripped), expected);
        let removed_any = bcc.len().min(keep.len()) > 0;
        prop_assert_eq!(matches!(stripped, std::borrow::Cow::Owned(_)), removed_any);
    }

    /// An EML item's sent date comes from the parse that read its other fields; it must be
    /// what mail-parser reads from the archived message alone (the last `Date`, folded or
    /// not, none when unreadable), with or without journal headers removed.
    #[test]
    fn an_eml_items_sent_date_is_the_archived_messages_date(
        dates in prop::collection::vec(
            prop_oneof![
                (1u32..28, 0usize..12, 1990u32..2040, 0u32..24, 0u32..60, -1200i32..1400)
                    .prop_map(|(d, m, y, h, min, z)| {
                        let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][m];
                        format!("Mon, {d} {month} {y} {h:02}:{min:02}:07 {z:+05}")
                    }),
                "[ -~]{0,30}",
            ],
            0..3,
        ),
        folded in any::<bool>(),
        journal_header in any::<bool>(),
        remove in any::<bool>(),
        lf in any::<bool>(),
    ) {
        let nl = if lf { "\n" } else { "\r\n" };
        let mut message = format!("From: a@x.com{nl}");
        if journal_header {
            message += &format!("X-MS-Exchange-Organization-BCC: boss@x.com{nl}");
        }
        for date in &dates {
            match date.split_once(' ') {
                Some((first, rest)) if folded => message += &format!("Date: {first}{nl}\t{rest}{nl}"),
                _ => message += &format!("Date: {date}{nl}"),
            }
            message += &format!("Subject: s{nl}");
        }
        message += &format!("{nl}Date: Tue, 1 Jan 2030 00:00:00 +0000{nl}");
        let options = ParseOptions { journal_type: Format::Eml, remove_journal_headers: remove, ..Default::default() };
        let item = JournalItem::parse(message.as_bytes(), &options);
        let archived = item.archived_message(&options);
        let expected = mail_parser::MessageParser::new()
            .parse_headers(&archived[..])
            .and_then(|m| m.date().map(|d| d.to_timestamp()));
        prop_assert_eq!(item.sent_at(&options), expected);
    }
}
