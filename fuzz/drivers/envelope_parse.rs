//! Raw item bytes through the journal item parser, with every option combination.
//! Invariants: never panics; every span lies inside the input; an envelope item has a
//! sender and an original; an EML item's original is the whole input; parsing is
//! deterministic; the archived message is never larger than the input plus decoding slack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mailjournal_envelope::{Format, JournalItem, ParseOptions};

/// Runs one fuzz input; panics when an invariant breaks.
pub(crate) fn run(data: &[u8]) {
    for journal_type in [Format::Envelope, Format::Eml] {
        for (prefer, remove) in [(false, false), (true, true)] {
            let options = ParseOptions {
                journal_type,
                prefer_clear_text_version: prefer,
                remove_journal_headers: remove,
            };
            let item = JournalItem::parse(data, &options);
            for span in [item.original(), item.clear_text()].into_iter().flatten() {
                assert!(
                    span.offset
                        .checked_add(span.length)
                        .is_some_and(|end| end <= data.len())
                );
            }
            match item.format() {
                Format::Envelope => {
                    assert!(item.sender().is_some() && item.original().is_some());
                    assert!(item.step_down().is_none());
                }
                Format::Eml => assert_eq!(item.original().map(|s| s.length), Some(data.len())),
            }
            if journal_type == Format::Eml {
                assert_eq!(item.format(), Format::Eml);
            }
            let archived = item.archived_message(&options);
            assert!(archived.len() <= data.len());
            let again = JournalItem::parse(data, &options);
            assert_eq!(item.recipients(), again.recipients());
            assert_eq!(item.step_down(), again.step_down());
        }
    }
}
