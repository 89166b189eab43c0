//! Who may hand the session a message: which RCPT is a journal address, from which client,
//! over TLS or not, with which credentials. The session asks through [`Admission`]; the
//! compiled journal definitions ([`Policy`]) answer it, and a host with rules of its own
//! implements it instead.
//!
//! ```
//! use std::sync::Arc;
//! use mailjournal_definition::{Policy, provision};
//! use mailjournal_smtp::{Admission, RecipientKind, Session, SessionConfig};
//!
//! let config = provision::starter_config("contoso.com").unwrap();
//! let (policy, _) = Policy::from_config(&config).unwrap();
//! assert_eq!(policy.recipient("journaling@journal.contoso.com"), RecipientKind::Journal(0));
//! assert_eq!(policy.recipient("bob@fabrikam.com"), RecipientKind::Relay);
//!
//! // The session takes any admission rules: here the compiled definitions.
//! let admission: Arc<dyn Admission> = Arc::new(policy);
//! let mut session = Session::new(
//!     Arc::new(SessionConfig::default()),
//!     admission,
//!     "203.0.113.9".parse().unwrap(),
//! );
//! assert!(session.take_output().starts_with(b"220 "));
//! ```

use std::net::IpAddr;

use mailjournal_definition::{EmailAddress, Policy};

/// What a `RCPT TO` address is to the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientKind {
    /// The service address of journal definition `journal` (the handle the session gives
    /// back in [`Recipient::journal`](crate::Recipient)).
    Journal(usize),
    /// An address in a domain the receiver serves, but no journal address (`550 5.1.1`).
    LocalUnknown,
    /// Anywhere else: relaying is refused (`550 5.7.1`).
    Relay,
}

/// The rules of one journal definition that admission needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalRules<'a> {
    /// Its service address, normalised: the identity SMTP authentication proves.
    pub service_address: &'a str,
    /// Disabled definitions take no mail.
    pub disabled: bool,
    /// Mail only over TLS.
    pub encrypted: bool,
    /// Clients authenticate as the service address instead of sending from an allowed range.
    pub use_smtp_authentication: bool,
}

/// The admission rules a session applies.
pub trait Admission: Send + Sync + std::fmt::Debug {
    /// What `address` (a `RCPT TO` path) is.
    fn recipient(&self, address: &str) -> RecipientKind;

    /// The rules of journal definition `journal` (a handle from [`recipient`](Self::recipient)
    /// or [`journals`](Self::journals)).
    fn rules(&self, journal: usize) -> Option<JournalRules<'_>>;

    /// Every journal definition's handle.
    fn journals(&self) -> std::ops::Range<usize>;

    /// Whether a client at `peer` may send to `journal` without authenticating.
    fn source_allowed(&self, journal: usize, peer: IpAddr) -> bool;

    /// The identity `user` proves with `password`, if it is the service address of an enabled
    /// definition that uses SMTP authentication. Implementations should take the same time
    /// whichever definition matches.
    fn authenticate(&self, user: &str, password: &[u8]) -> Option<String>;
}

impl Admission for Policy {
    fn recipient(&self, address: &str) -> RecipientKind {
        if let Some(journal) = self.journal_for_recipient(address) {
            return RecipientKind::Journal(journal.index);
        }
        let local = address.rsplit_once('@').is_some_and(|(_, d)| {
            self.internal_domains
                .iter()
                .any(|i| i.eq_ignore_ascii_case(d.trim_end_matches('.')))
        });
        if local {
            RecipientKind::LocalUnknown
        } else {
            RecipientKind::Relay
        }
    }

    fn rules(&self, journal: usize) -> Option<JournalRules<'_>> {
        self.journals.get(journal).map(|j| JournalRules {
            service_address: j.service_address.as_str(),
            disabled: j.definition.disabled,
            encrypted: j.definition.encrypted,
            use_smtp_authentication: j.definition.use_smtp_authentication,
        })
    }

    fn journals(&self) -> std::ops::Range<usize> {
        0..self.journals.len()
    }

    fn source_allowed(&self, journal: usize, peer: IpAddr) -> bool {
        self.journals
            .get(journal)
            .is_some_and(|j| Policy::source_allowed(self, j, peer))
    }

    fn authenticate(&self, user: &str, password: &[u8]) -> Option<String> {
        let user = EmailAddress::parse(user).ok()?;
        // Compare against every candidate so the time does not depend on which one matched.
        let mut matched = None;
        for journal in &self.journals {
            let d = &journal.definition;
            let candidate = d.use_smtp_authentication
                && !d.disabled
                && !d.password.is_empty()
                && journal.service_address == user;
            if constant_time_eq(d.password.as_bytes(), password) && candidate {
                matched = Some(journal.service_address.to_string());
            }
        }
        matched
    }
}

/// Equality in time that depends on the lengths only, never on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn the_compiled_definitions_answer_who_receives_what() {
        let config = mailjournal_definition::provision::starter_config("contoso.com").unwrap();
        let (policy, _) = Policy::from_config(&config).unwrap();
        assert_eq!(
            policy.recipient("JOURNALING@journal.contoso.com"),
            RecipientKind::Journal(0)
        );
        assert_eq!(
            policy.recipient("someone@journal.contoso.com"),
            RecipientKind::LocalUnknown
        );
        assert_eq!(policy.recipient("x@fabrikam.com"), RecipientKind::Relay);
        let rules = policy.rules(0).unwrap();
        assert_eq!(rules.service_address, "journaling@journal.contoso.com");
        assert!(policy.rules(1).is_none());
        assert_eq!(policy.journals(), 0..1);
    }
}
