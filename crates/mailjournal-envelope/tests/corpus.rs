//! Golden tests for every file of the shared journal-report corpus (`../shared/corpus/eej`),
//! with the expectations its README states.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use mailjournal_envelope::{
    Format, JournalItem, ParseOptions, RecipientField, ReportVersion, StepDown,
};

fn corpus(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpus/eej")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn recipients(
    item: &JournalItem<'_>,
) -> Vec<(String, RecipientField, Option<String>, Option<String>)> {
    item.recipients()
        .iter()
        .map(|r| {
            (
                r.address.to_string(),
                r.field,
                r.expanded.as_deref().map(str::to_owned),
                r.forwarded.as_deref().map(str::to_owned),
            )
        })
        .collect()
}

/// The original must be exactly the direct child: it ends where the report's own delimiter
/// line starts, and it starts with the attached message's first header.
fn assert_original_is_direct_child(bytes: &[u8], item: &JournalItem<'_>, first_header: &[u8]) {
    let span = item.original().unwrap();
    let original = span.slice(bytes);
    assert!(
        original.starts_with(first_header),
        "{:?}",
        String::from_utf8_lossy(&original[..40.min(original.len())])
    );
    let after = &bytes[span.offset + span.length..];
    assert!(
        after.starts_with(b"\n--") || after.starts_with(b"\r\n--"),
        "original ends before a report delimiter"
    );
}

#[test]
fn real_exo_reports() {
    let cases = [
        (
            "real/exo-2018-o365_journaled.eml",
            "ap@someothercompany.com",
            "lulu.zingzing@company.com",
            "INVOICE PDL-06-38776",
        ),
        (
            "real/exo-2018-pdf_attachment.eml",
            "unixfreak0037@gmail.com",
            "jwdavison@company.com",
            "canary #1",
        ),
        (
            "real/exo-2018-splunk_logging.eml",
            "unixfreak0037@gmail.com",
            "jwdavison@company.com",
            "canary #3",
        ),
        (
            "real/exo-2018-phish_me.eml",
            "CWare@company.com",
            "valvphish@integraldefense.com",
            "[POTENTIAL PHISH] Testing 1-2- 3",
        ),
    ];
    for (file, sender, recipient, subject) in cases {
        let bytes = corpus(file);
        let item = JournalItem::parse(&bytes, &ParseOptions::default());
        assert_eq!(item.format(), Format::Envelope, "{file}");
        assert_eq!(item.step_down(), None, "{file}");
        assert_eq!(
            item.report_version(),
            Some(ReportVersion::Exchange2007),
            "{file}"
        );
        assert_eq!(item.sender(), Some(sender), "{file}");
        assert_eq!(item.subject(), Some(subject), "{file}");
        assert_eq!(
            recipients(&item),
            [(recipient.to_owned(), RecipientField::Recipient, None, None)],
            "{file}"
        );
        assert!(item.warnings().is_empty(), "{file}: {:?}", item.warnings());
        assert!(item.bcc_visible());
        assert!(!item.unwrapped_ndr());
        assert_eq!(item.clear_text(), None);
        assert_original_is_direct_child(&bytes, &item, b"Received: ");
    }
}

#[test]
fn phish_me_nested_message_stays_inside_the_original() {
    let bytes = corpus("real/exo-2018-phish_me.eml");
    let item = JournalItem::parse(&bytes, &ParseOptions::default());
    let original = item.original_bytes().unwrap();
    // The original carries its own message/rfc822 attachment: it must be inside the span.
    assert!(memchr::memmem::find(original, b"message/rfc822").is_some());
    assert_eq!(
        item.message_id(),
        Some("DM5PR2001MB1033AC6DF60D6EE45B25631DBB530@DM5PR2001MB1033.namprd20.prod.outlook.com")
    );
}

#[test]
fn o365_journaled_folded_sender_and_parent_id() {
    let bytes = corpus("real/exo-2018-o365_journaled.eml");
    let item = JournalItem::parse(&bytes, &ParseOptions::default());
    assert_eq!(
        item.message_id(),
        Some("13268020124593518925.93733CB7019D1C46@company.com")
    );
    let date = item.archived_header(&ParseOptions::default(), "Date");
    assert!(date.is_some());
}

#[test]
fn to_cc_bcc_expanded_forwarded_on_behalf() {
    let bytes = corpus("synthetic/onprem_to_cc_bcc_expanded_forwarded_onbehalf.eml");
    let item = JournalItem::parse(&bytes, &ParseOptions::default());
    assert_eq!(item.format(), Format::Envelope);
    assert_eq!(item.sender(), Some("alice@contoso.com"));
    assert_eq!(item.on_behalf_of(), Some("sales@contoso.com"));
    let s = |x: &str| Some(x.to_owned());
    use RecipientField::*;
    assert_eq!(
        recipients(&item),
        [
            (
                "bob@contoso.com".into(),
                To,
                s("allstaff@contoso.com"),
                None
            ),
            (
                "carol@contoso.com".into(),
                To,
                s("allstaff@contoso.com"),
                None
            ),
            (
                "dave-assistant@contoso.com".into(),
                To,
                None,
                s("dave@contoso.com")
            ),
            ("kim@contoso.com".into(), Cc, None, None),
            ("legal@contoso.com".into(), Bcc, None, None),
            (
                "ext-auditor@fabrikam.com".into(),
                Bcc,
                s("auditors@contoso.com"),
                None
            ),
            ("partner@fabrikam.com".into(), Recipient, None, None),
        ]
    );
    assert!(item.warnings().is_empty(), "{:?}", item.warnings());
}

#[test]
fn rms_clear_text_copy_selected_by_option() {
    let bytes = corpus("synthetic/rms_protected_plus_decrypted_copy.eml");
    let plain = ParseOptions::default();
    let item = JournalItem::parse(&bytes, &plain);
    assert!(item.clear_text().is_some());
    let protected = item.archived_message(&plain);
    assert!(memchr::memmem::find(&protected, b"message.rpmsg").is_some());
    let prefer = ParseOptions {
        prefer_clear_text_version: true,
        ..Default::default()
    };
    let clear = item.archived_message(&prefer);
    assert!(clear.ends_with(b"Decrypted clear-text body.\r\n"));
    assert_eq!(
        item.archived_span(&prefer).unwrap(),
        (item.clear_text().unwrap(), true)
    );
}

#[test]
fn nonascii_qp_subject_decoded() {
    let bytes = corpus("synthetic/nonascii_subject_qp_envelope.eml");
    let item = JournalItem::parse(&bytes, &ParseOptions::default());
    assert_eq!(item.subject(), Some("Grüße aus München"));
    assert_eq!(item.sender(), Some("juergen@contoso.de"));
    assert_eq!(
        recipients(&item),
        [(
            "team@contoso.de".into(),
            RecipientField::Recipient,
            None,
            None
        )]
    );
}

#[test]
fn ndr_wrapped_report_unwrapped_one_level() {
    let bytes = corpus("synthetic/alternate_mailbox_ndr_wrapping_journal_report.eml");
    let item = JournalItem::parse(&bytes, &ParseOptions::default());
    assert_eq!(item.format(), Format::Envelope);
    assert!(item.unwrapped_ndr());
    assert_eq!(item.sender(), Some("alice@contoso.com"));
    assert_eq!(
        recipients(&item),
        [("bob@contoso.com".into(), RecipientField::To, None, None)]
    );
    assert!(
        item.original_bytes()
            .unwrap()
            .starts_with(b"From: alice@contoso.com")
    );
    assert!(item.original_bytes().unwrap().ends_with(b"Body.\r\n"));
}

#[test]
fn not_enveloped_steps_down() {
    let bytes = corpus("synthetic/not_enveloped_plain_message.eml");
    let item = JournalItem::parse(&bytes, &ParseOptions::default());
    assert_eq!(item.format(), Format::Eml);
    assert_eq!(item.step_down(), Some(StepDown::NoJournalHeader));
    assert_eq!(item.sender(), Some("news@fabrikam.com"));
    assert_eq!(
        recipients(&item),
        [(
            "journaling@journal.contoso.com".into(),
            RecipientField::To,
            None,
            None
        )]
    );
    assert!(!item.bcc_visible());
    assert_eq!(item.original_bytes().unwrap(), &bytes[..]);
}

#[test]
fn original_as_text_plain_steps_down_with_reason() {
    let bytes = corpus("synthetic/malformed_original_as_text_plain.eml");
    let item = JournalItem::parse(&bytes, &ParseOptions::default());
    assert_eq!(item.format(), Format::Eml);
    assert_eq!(item.step_down(), Some(StepDown::OriginalNotRfc822));
    assert_eq!(item.sender(), Some("alice@contoso.com"));
}

#[test]
fn exchange2003_detected() {
    let bytes = corpus("synthetic/exchange2003_style_envelope.eml");
    let item = JournalItem::parse(&bytes, &ParseOptions::default());
    assert_eq!(item.format(), Format::Envelope);
    assert_eq!(item.report_version(), Some(ReportVersion::Exchange2003));
    assert_eq!(item.sender(), Some("alice@contoso.com"));
    assert_eq!(item.message_id(), Some("proj-1@contoso.com"));
    assert_eq!(
        item.subject(),
        Some("Project plan"),
        "from the original when the envelope has none"
    );
    let r: Vec<_> = item
        .recipients()
        .iter()
        .map(|r| r.address.as_ref())
        .collect();
    assert_eq!(r, ["bob@contoso.com", "carol@contoso.com"]);
}

#[test]
fn every_corpus_file_parses_as_eml_too() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/eej");
    let options = ParseOptions {
        journal_type: Format::Eml,
        ..Default::default()
    };
    let mut seen = 0;
    for sub in ["real", "synthetic"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let item = JournalItem::parse(&bytes, &options);
            assert_eq!(item.format(), Format::Eml);
            assert_eq!(
                item.step_down(),
                None,
                "journal type EML is not a step-down"
            );
            assert_eq!(item.original_bytes().unwrap().len(), bytes.len());
            seen += 1;
        }
    }
    assert_eq!(seen, 11);
}
