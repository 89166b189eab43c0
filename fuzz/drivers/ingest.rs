//! Raw item bytes through `mailjournal::ingest` (parse with the definition's options, then the
//! archive policy), under definitions that differ in journal type and in the two "journal ...
//! addresses" options, on a policy with internal domain `contoso.com` and one known mailbox.
//! Invariants: never panics; deterministic; every mailbox is a normalised internal address of
//! the item (known, unless unknown ones are journaled), listed once, in order; a dropped item
//! has the reason its addresses give; an empty assignment only when non-internal items are
//! journaled; the queue-details sender is one of the item's addresses; the archived form is no
//! larger than the input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use mailjournal::definition::{
    AddressClass, ArchiveDecision, DropReason, EmailAddress, JournalType, Policy, provision,
};
use mailjournal::ingest;

/// One definition per combination of journal type and the two address options.
fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let mut config = provision::starter_config("contoso.com").expect("starter");
        config.directory.known_addresses = vec!["alice@contoso.com".into()];
        let template = config.journal[0].clone();
        config.journal.clear();
        for (n, journal_type) in [JournalType::Eej, JournalType::Eml].into_iter().enumerate() {
            for (m, (unknown, non_internal)) in
                [(false, false), (true, false), (false, true), (true, true)]
                    .into_iter()
                    .enumerate()
            {
                let mut d = template.clone();
                d.description = format!("fuzz {n}{m}");
                d.service_email_address = format!("journaling{n}{m}@journal.contoso.com");
                d.journal_type = journal_type;
                d.journal_unknown_internal_addresses = unknown;
                d.journal_non_internal_addresses = non_internal;
                config.journal.push(d);
            }
        }
        Policy::from_config(&config).expect("a valid policy").0
    })
}

/// Runs one fuzz input; panics when an invariant breaks.
pub(crate) fn run(data: &[u8]) {
    let policy = policy();
    for journal in &policy.journals {
        let ingested = ingest::ingest(policy, journal, data);
        let item = ingested.item();
        let addresses: Vec<&str> = item
            .sender()
            .into_iter()
            .chain(item.recipients().iter().map(|r| r.address.as_ref()))
            .collect();
        let normalised: Vec<String> = addresses
            .iter()
            .filter_map(|a| EmailAddress::parse(a).ok())
            .map(|a| a.as_str().to_owned())
            .collect();
        let classes: Vec<AddressClass> = normalised.iter().map(|a| policy.classify(a)).collect();
        let d = &journal.definition;
        match ingested.decision() {
            ArchiveDecision::Archive { mailboxes } => {
                assert!(mailboxes.windows(2).all(|w| w[0] < w[1]), "{mailboxes:?}");
                for mailbox in mailboxes {
                    assert!(normalised.contains(mailbox), "{mailbox} is not the item's");
                    match policy.classify(mailbox) {
                        AddressClass::InternalKnown => {}
                        AddressClass::InternalUnknown => {
                            assert!(d.journal_unknown_internal_addresses, "{mailbox}")
                        }
                        AddressClass::External => panic!("external mailbox {mailbox}"),
                    }
                }
                if mailboxes.is_empty() {
                    assert!(d.journal_non_internal_addresses);
                    assert!(!classes.contains(&AddressClass::InternalKnown));
                }
            }
            ArchiveDecision::Drop(DropReason::NoInternalAddresses) => {
                assert!(classes.iter().all(|c| *c == AddressClass::External));
                assert!(!d.journal_non_internal_addresses);
            }
            ArchiveDecision::Drop(DropReason::OnlyUnknownInternalAddresses) => {
                assert!(classes.contains(&AddressClass::InternalUnknown));
                assert!(!classes.contains(&AddressClass::InternalKnown));
                assert!(!d.journal_unknown_internal_addresses);
            }
        }
        if let Some(shown) = ingested.display_sender() {
            assert!(addresses.contains(&shown), "{shown} is not the item's");
        }
        assert!(ingested.archived_message().len() <= data.len());
        let again = ingest::ingest(policy, journal, data);
        assert_eq!(ingested.decision(), again.decision());
        assert_eq!(ingested.display_sender(), again.display_sender());
    }
}
