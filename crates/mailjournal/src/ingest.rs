//! The ingest step that joins the crates: a journal report received for one journal
//! definition, parsed with that definition's options and judged by its archive policy.
//!
//! This is what an archiving service does with each accepted item once it is durable (the
//! reference server calls it from its pipeline, inside `catch_unwind`); storage,
//! de-duplication and scheduling stay with the caller.
//!
//! ```
//! use mailjournal::definition::{provision, ArchiveDecision, JournalType, Policy};
//!
//! let mut config = provision::starter_config("contoso.com").unwrap();
//! config.journal[0].journal_type = JournalType::Eml;
//! let (policy, _warnings) = Policy::from_config(&config).unwrap();
//! let journal = &policy.journals[0];
//!
//! let report = b"From: alice@contoso.com\r\nTo: bob@fabrikam.com\r\n\
//!                Message-ID: <1@contoso.com>\r\nSubject: hi\r\n\r\nbody\r\n";
//! let ingested = mailjournal::ingest::ingest(&policy, journal, report);
//! assert_eq!(ingested.display_sender(), Some("alice@contoso.com"));
//! assert_eq!(ingested.item().message_id(), Some("1@contoso.com"));
//! assert!(matches!(ingested.decision(), ArchiveDecision::Archive { .. }));
//! // An EML item is archived as received.
//! assert_eq!(&ingested.archived_message()[..], &report[..]);
//! ```

use std::borrow::Cow;

use mailjournal_definition::policy::Journal;
use mailjournal_definition::{ArchiveDecision, JournalDefinition, JournalType, Policy};
use mailjournal_envelope::{Format, JournalItem, ParseOptions};

/// The parse options a journal definition asks for: its journal type (Exchange Envelope
/// Journaling reports, which still step down to plain EML when a report is not enveloped, or
/// standard EML), "prefer clear text version" and "remove journal headers".
///
/// ```
/// use mailjournal::definition::{provision, JournalType};
/// use mailjournal::envelope::Format;
///
/// let mut config = provision::starter_config("contoso.com").unwrap();
/// config.journal[0].remove_journal_headers = true;
/// let options = mailjournal::ingest::parse_options(&config.journal[0]);
/// assert_eq!(options.journal_type, Format::Envelope);
/// assert!(options.remove_journal_headers);
/// ```
pub fn parse_options(definition: &JournalDefinition) -> ParseOptions {
    ParseOptions {
        journal_type: match definition.journal_type {
            JournalType::Eej => Format::Envelope,
            JournalType::Eml => Format::Eml,
        },
        prefer_clear_text_version: definition.prefer_clear_text_version,
        remove_journal_headers: definition.remove_journal_headers,
    }
}

/// Parses `bytes`, received for `journal`, with the definition's options, and asks `policy`
/// whether to archive it and for which internal mailboxes. Never fails: a report that is not
/// what its definition says is read as well as it can be (see
/// [`JournalItem::step_down`](mailjournal_envelope::JournalItem::step_down)), and an item
/// the policy does not keep says why in its [`decision`](Ingested::decision).
pub fn ingest<'a>(policy: &Policy, journal: &Journal, bytes: &'a [u8]) -> Ingested<'a> {
    let options = parse_options(&journal.definition);
    let item = JournalItem::parse(bytes, &options);
    let addresses = item.recipients().iter().map(|r| r.address.as_ref());
    let decision = policy.decide(journal, item.sender(), addresses);
    Ingested {
        item,
        options,
        decision,
    }
}

/// One journal report taken in: the parsed item, the options it was parsed with and the
/// archive policy's decision. Borrows from the report's bytes.
#[derive(Debug)]
pub struct Ingested<'a> {
    item: JournalItem<'a>,
    options: ParseOptions,
    decision: ArchiveDecision,
}

impl<'a> Ingested<'a> {
    /// The parsed item: envelope fields, recipients (Bcc included), the original's span.
    pub fn item(&self) -> &JournalItem<'a> {
        &self.item
    }

    /// The options it was parsed with (its definition's).
    pub fn options(&self) -> &ParseOptions {
        &self.options
    }

    /// Archive (for which mailboxes) or drop (why).
    pub fn decision(&self) -> &ArchiveDecision {
        &self.decision
    }

    /// The sender that queue details show, as the specification's *Verifying* section
    /// describes: for an envelope item, its (first) recipient; for an EML item, its `From:`
    /// address.
    pub fn display_sender(&self) -> Option<&str> {
        match self.item.format() {
            Format::Envelope => self.item.recipients().first().map(|r| r.address.as_ref()),
            Format::Eml => self.item.sender(),
        }
    }

    /// The message to archive: the original inside an envelope report (its clear-text
    /// version when preferred and present), or an EML item as received, with the journal
    /// headers removed when the definition asks. Borrowed from the report whenever it can be.
    pub fn archived_message(&self) -> Cow<'a, [u8]> {
        self.item.archived_message(&self.options)
    }

    /// The archived message's sent date (its `Date:` header, as seconds since the epoch):
    /// with the Message-ID, the key that de-duplication matches on.
    pub fn sent_at(&self) -> Option<i64> {
        self.item.sent_at(&self.options)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use mailjournal_definition::{DropReason, provision};

    const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpus/eej");

    fn policy(edit: impl FnOnce(&mut JournalDefinition)) -> Policy {
        let mut config = provision::starter_config("contoso.com").unwrap();
        edit(&mut config.journal[0]);
        Policy::from_config(&config).unwrap().0
    }

    fn corpus(name: &str) -> Vec<u8> {
        std::fs::read(format!("{CORPUS}/{name}")).unwrap()
    }

    #[test]
    fn an_envelope_report_archives_its_original_for_every_internal_recipient_bcc_included() {
        let policy = policy(|_| {});
        let bytes = corpus("synthetic/onprem_to_cc_bcc_expanded_forwarded_onbehalf.eml");
        let ingested = ingest(&policy, &policy.journals[0], &bytes);
        assert_eq!(ingested.item().format(), Format::Envelope);
        let ArchiveDecision::Archive { mailboxes } = ingested.decision() else {
            panic!("{:?}", ingested.decision());
        };
        assert!(
            mailboxes.iter().any(|m| m == "legal@contoso.com"),
            "{mailboxes:?}"
        );
        // The envelope's first recipient stands for the sender in queue details.
        assert_eq!(
            ingested.display_sender(),
            ingested
                .item()
                .recipients()
                .first()
                .map(|r| r.address.as_ref())
        );
        assert_ne!(ingested.display_sender(), ingested.item().sender());
        // The original, borrowed from the report, not the report itself.
        let archived = ingested.archived_message();
        assert!(matches!(archived, Cow::Borrowed(_)));
        assert!(archived.len() < bytes.len());
        assert!(archived.starts_with(b"From: Sales Team <sales@contoso.com>"));
        assert!(ingested.sent_at().is_some());
    }

    #[test]
    fn the_definition_decides_how_the_report_is_read() {
        let bytes = corpus("synthetic/onprem_to_cc_bcc_expanded_forwarded_onbehalf.eml");
        let eml = policy(|d| d.journal_type = JournalType::Eml);
        let ingested = ingest(&eml, &eml.journals[0], &bytes);
        assert_eq!(ingested.item().format(), Format::Eml);
        assert_eq!(&ingested.archived_message()[..], &bytes[..]);
        assert_eq!(ingested.display_sender(), ingested.item().sender());
    }

    #[test]
    fn journal_headers_go_when_the_definition_says_so() {
        let bytes =
            b"From: alice@contoso.com\r\nX-MS-Exchange-Organization-BCC: cfo@contoso.com,\r\n\
                      \tlegal@contoso.com\r\nTo: bob@fabrikam.com\r\nSubject: s\r\n\r\nbody\r\n";
        let keep = policy(|d| d.journal_type = JournalType::Eml);
        let kept = ingest(&keep, &keep.journals[0], bytes).archived_message();
        assert_eq!(&kept[..], &bytes[..]);
        let remove = policy(|d| {
            d.journal_type = JournalType::Eml;
            d.remove_journal_headers = true;
        });
        let removed = ingest(&remove, &remove.journals[0], bytes).archived_message();
        assert_eq!(
            &removed[..],
            b"From: alice@contoso.com\r\nTo: bob@fabrikam.com\r\nSubject: s\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn an_item_without_internal_addresses_is_dropped_with_its_reason() {
        let policy = policy(|_| {});
        let bytes = corpus("real/exo-2018-o365_journaled.eml");
        let ingested = ingest(&policy, &policy.journals[0], &bytes);
        assert!(matches!(
            ingested.decision(),
            ArchiveDecision::Drop(DropReason::NoInternalAddresses)
        ));
    }
}
