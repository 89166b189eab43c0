//! The compiled, validated configuration ([`Policy`]) and the archive decision.
//!
//! A [`Config`] holds what the administrator wrote; a [`Policy`] exists only for a configuration
//! without errors, with ranges parsed and addresses normalised, so the SMTP session and the
//! pipeline never re-check text.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::address::{EmailAddress, is_same_or_subdomain, normalize_domain};
use crate::validate::parse_cidr;
use crate::{Config, JournalDefinition, Report};

/// One journal definition, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// Position in the configuration (`journal[index]`).
    pub index: usize,
    /// The definition as configured.
    pub definition: JournalDefinition,
    /// The service address, normalised.
    pub service_address: EmailAddress,
    /// The additional source IP ranges, parsed.
    pub source_ranges: Vec<IpNet>,
}

/// How the archive sees one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Not on any internal domain.
    External,
    /// On an internal domain and known to the directory (or no directory is configured).
    InternalKnown,
    /// On an internal domain but not in the directory.
    InternalUnknown,
}

/// Why an item is not archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No internal address at all, and "journal non-internal addresses" is off.
    NoInternalAddresses,
    /// Only internal addresses the directory does not know, and "journal unknown internal
    /// addresses" is off.
    OnlyUnknownInternalAddresses,
}

impl DropReason {
    /// A stable code for logs and queue details.
    pub fn code(self) -> &'static str {
        match self {
            DropReason::NoInternalAddresses => "no_internal_addresses",
            DropReason::OnlyUnknownInternalAddresses => "only_unknown_internal_addresses",
        }
    }
}

/// Whether an item is archived, and for whom. A dropped item carries its reason so it is
/// reported, never silently lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveDecision {
    /// Archive the item and assign it to these mailboxes (normalised, sorted, unique). Empty
    /// when the item holds no internal address and "journal non-internal addresses" is on.
    Archive {
        /// The internal mailboxes the item is assigned to.
        mailboxes: Vec<String>,
    },
    /// Do not archive.
    Drop(DropReason),
}

/// A validated configuration, ready for the session and the pipeline.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Ranges allowed to send to every definition.
    pub authorized_outbound: Vec<IpNet>,
    /// Internal domains, normalised.
    pub internal_domains: Vec<String>,
    /// Known internal addresses, normalised; empty means "no directory configured".
    pub known_addresses: HashSet<String>,
    /// Every definition, enabled or not, in configuration order.
    pub journals: Vec<Journal>,
    /// Largest message accepted.
    pub max_message_size_bytes: u64,
    /// Days the as-received copies are kept after retirement (`None`: for ever).
    pub as_received_days: Option<u32>,
    /// Addresses under legal hold, normalised.
    pub held_addresses: Vec<EmailAddress>,
    /// Queue ids under legal hold (16 upper-case hex digits).
    pub held_items: Vec<String>,
}

impl Policy {
    /// Compiles a configuration. Fails with the full report when it has errors; otherwise
    /// returns the policy and the warnings.
    ///
    /// ```
    /// use mailjournal_definition::{provision, Policy};
    /// let mut config = provision::starter_config("contoso.com").unwrap();
    /// config.journal[0].additional_source_ip_ranges = vec!["203.0.113.0/24".into()];
    /// let (policy, warnings) = Policy::from_config(&config).unwrap();
    /// assert!(warnings.problems.is_empty());
    /// let journal = policy.journal_for_recipient("JOURNALING@journal.contoso.com").unwrap();
    /// assert!(policy.source_allowed(journal, "203.0.113.9".parse().unwrap()));
    /// assert!(!policy.source_allowed(journal, "192.0.2.1".parse().unwrap()));
    /// ```
    pub fn from_config(config: &Config) -> Result<(Policy, Report), Report> {
        let report = config.validate();
        if report.has_errors() {
            return Err(report);
        }
        let ranges = |list: &[String]| -> Vec<IpNet> {
            list.iter().filter_map(|r| parse_cidr(r).ok()).collect()
        };
        let journals = config
            .journal
            .iter()
            .enumerate()
            .filter_map(|(index, definition)| {
                Some(Journal {
                    index,
                    service_address: EmailAddress::parse(&definition.service_email_address).ok()?,
                    source_ranges: ranges(&definition.additional_source_ip_ranges),
                    definition: definition.clone(),
                })
            })
            .collect();
        let policy = Policy {
            authorized_outbound: ranges(&config.server.authorized_outbound_ranges),
            internal_domains: config
                .internal_domain
                .iter()
                .flat_map(|d| d.domains())
                .filter_map(|d| normalize_domain(d).ok())
                .collect(),
            known_addresses: config
                .directory
                .known_addresses
                .iter()
                .filter_map(|a| EmailAddress::parse(a).ok())
                .map(|a| a.as_str().to_owned())
                .collect(),
            journals,
            max_message_size_bytes: config.server.max_message_size_bytes,
            as_received_days: config.retention.as_received_days,
            held_addresses: config
                .legal_hold
                .iter()
                .filter_map(|h| EmailAddress::parse(h.address.as_deref()?).ok())
                .collect(),
            held_items: config
                .legal_hold
                .iter()
                .filter_map(|h| Some(h.item.as_deref()?.to_ascii_uppercase()))
                .collect(),
        };
        let warnings = Report {
            problems: report.problems,
        };
        Ok((policy, warnings))
    }

    /// The definition whose service address is `address` (compared case-insensitively, local
    /// part included). An enabled definition wins over a disabled one with the same address.
    pub fn journal_for_recipient(&self, address: &str) -> Option<&Journal> {
        let address = EmailAddress::parse(address).ok()?;
        let mut matching = self
            .journals
            .iter()
            .filter(|j| j.service_address == address);
        let first = matching.next()?;
        if first.definition.disabled {
            Some(matching.find(|j| !j.definition.disabled).unwrap_or(first))
        } else {
            Some(first)
        }
    }

    /// True when `peer` may send to `journal`: inside its additional source ranges or the
    /// authorized outbound ranges. IPv4-mapped IPv6 peers are compared as IPv4.
    pub fn source_allowed(&self, journal: &Journal, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        journal
            .source_ranges
            .iter()
            .chain(&self.authorized_outbound)
            .any(|net| net.contains(&peer))
    }

    /// Classifies an address. Anything that does not parse as an address is external.
    ///
    /// ```
    /// use mailjournal_definition::{provision, AddressClass, Policy};
    /// let mut config = provision::starter_config("contoso.com").unwrap();
    /// config.directory.known_addresses = vec!["alice@contoso.com".into()];
    /// let (policy, _) = Policy::from_config(&config).unwrap();
    /// assert_eq!(policy.classify("Alice@CONTOSO.com"), AddressClass::InternalKnown);
    /// assert_eq!(policy.classify("bob@sales.contoso.com"), AddressClass::InternalUnknown);
    /// assert_eq!(policy.classify("eve@fabrikam.com"), AddressClass::External);
    /// ```
    pub fn classify(&self, address: &str) -> AddressClass {
        match EmailAddress::parse(address) {
            Ok(address) => self.classify_parsed(&address),
            Err(_) => AddressClass::External,
        }
    }

    /// [`classify`](Self::classify) for an address already parsed.
    fn classify_parsed(&self, address: &EmailAddress) -> AddressClass {
        let internal = self
            .internal_domains
            .iter()
            .any(|d| is_same_or_subdomain(address.domain(), d));
        if !internal {
            AddressClass::External
        } else if self.known_addresses.is_empty() || self.known_addresses.contains(address.as_str())
        {
            AddressClass::InternalKnown
        } else {
            AddressClass::InternalUnknown
        }
    }

    /// Decides whether an item with this sender and these recipients is archived under
    /// `journal`'s options, and assigns it to every internal mailbox those options allow.
    ///
    /// ```
    /// use mailjournal_definition::{provision, ArchiveDecision, DropReason, Policy};
    /// let config = provision::starter_config("contoso.com").unwrap();
    /// let (policy, _) = Policy::from_config(&config).unwrap();
    /// let journal = &policy.journals[0];
    /// assert_eq!(
    ///     policy.decide(journal, Some("eve@fabrikam.com"), ["Bob@Contoso.com"]),
    ///     ArchiveDecision::Archive { mailboxes: vec!["bob@contoso.com".into()] },
    /// );
    /// assert_eq!(
    ///     policy.decide(journal, Some("eve@fabrikam.com"), ["mallory@fabrikam.com"]),
    ///     ArchiveDecision::Drop(DropReason::NoInternalAddresses),
    /// );
    /// ```
    pub fn decide<'a>(
        &self,
        journal: &Journal,
        sender: Option<&'a str>,
        recipients: impl IntoIterator<Item = &'a str>,
    ) -> ArchiveDecision {
        let options = &journal.definition;
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for address in sender.into_iter().chain(recipients) {
            let Ok(parsed) = EmailAddress::parse(address) else {
                continue;
            };
            match self.classify_parsed(&parsed) {
                AddressClass::External => {}
                AddressClass::InternalKnown => known.push(parsed.as_str().to_owned()),
                AddressClass::InternalUnknown => unknown.push(parsed.as_str().to_owned()),
            }
        }
        let mut mailboxes = known;
        if options.journal_unknown_internal_addresses {
            mailboxes.append(&mut unknown);
        }
        mailboxes.sort();
        mailboxes.dedup();
        if !mailboxes.is_empty() {
            ArchiveDecision::Archive { mailboxes }
        } else if !unknown.is_empty() {
            ArchiveDecision::Drop(DropReason::OnlyUnknownInternalAddresses)
        } else if options.journal_non_internal_addresses {
            ArchiveDecision::Archive {
                mailboxes: Vec::new(),
            }
        } else {
            ArchiveDecision::Drop(DropReason::NoInternalAddresses)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision;

    fn policy(edit: impl FnOnce(&mut Config)) -> Policy {
        let mut config = provision::starter_config("contoso.com").unwrap();
        config.directory.known_addresses = vec!["alice@contoso.com".into()];
        edit(&mut config);
        Policy::from_config(&config).unwrap().0
    }

    #[test]
    fn decision_table() {
        let archive = |m: &[&str]| ArchiveDecision::Archive {
            mailboxes: m.iter().map(|s| s.to_string()).collect(),
        };
        // (non-internal option, unknown option, sender, recipients, expected)
        let cases = [
            (
                false,
                false,
                "x@fabrikam.com",
                vec!["alice@contoso.com"],
                archive(&["alice@contoso.com"]),
            ),
            (
                false,
                false,
                "x@fabrikam.com",
                vec!["zed@contoso.com"],
                ArchiveDecision::Drop(DropReason::OnlyUnknownInternalAddresses),
            ),
            (
                false,
                true,
                "x@fabrikam.com",
                vec!["zed@contoso.com"],
                archive(&["zed@contoso.com"]),
            ),
            (
                false,
                false,
                "x@fabrikam.com",
                vec!["y@fabrikam.com"],
                ArchiveDecision::Drop(DropReason::NoInternalAddresses),
            ),
            (
                true,
                false,
                "x@fabrikam.com",
                vec!["y@fabrikam.com"],
                archive(&[]),
            ),
            (
                true,
                false,
                "x@fabrikam.com",
                vec!["zed@contoso.com"],
                ArchiveDecision::Drop(DropReason::OnlyUnknownInternalAddresses),
            ),
            (
                false,
                false,
                "ALICE@contoso.com",
                vec!["zed@contoso.com", "alice@contoso.com"],
                archive(&["alice@contoso.com"]),
            ),
            (
                false,
                true,
                "alice@contoso.com",
                vec!["zed@contoso.com", "x@fabrikam.com"],
                archive(&["alice@contoso.com", "zed@contoso.com"]),
            ),
        ];
        for (non_internal, unknown, sender, recipients, expected) in cases {
            let p = policy(|c| {
                c.journal[0].journal_non_internal_addresses = non_internal;
                c.journal[0].journal_unknown_internal_addresses = unknown;
            });
            let got = p.decide(&p.journals[0], Some(sender), recipients.iter().copied());
            assert_eq!(
                got, expected,
                "{non_internal} {unknown} {sender} {recipients:?}"
            );
        }
    }

    #[test]
    fn without_directory_every_internal_address_is_known() {
        let p = policy(|c| c.directory.known_addresses.clear());
        assert_eq!(
            p.classify("anyone@contoso.com"),
            AddressClass::InternalKnown
        );
        assert_eq!(p.classify("not an address"), AddressClass::External);
    }

    #[test]
    fn recipient_lookup_prefers_enabled_and_ignores_case() {
        let p = policy(|c| {
            let mut disabled = c.journal[0].clone();
            disabled.disabled = true;
            disabled.description = "old".into();
            c.journal.insert(0, disabled);
        });
        let j = p
            .journal_for_recipient("JOURNALING@JOURNAL.CONTOSO.COM")
            .unwrap();
        assert_eq!(j.index, 1);
        assert!(
            p.journal_for_recipient("other@journal.contoso.com")
                .is_none()
        );
    }

    #[test]
    fn source_ranges_and_authorized_outbound_both_allow() {
        let p = policy(|c| {
            c.journal[0].additional_source_ip_ranges = vec!["127.0.0.1/32".into()];
            c.server.authorized_outbound_ranges = vec!["2001:db8::/32".into()];
        });
        let j = &p.journals[0];
        assert!(p.source_allowed(j, "127.0.0.1".parse().unwrap()));
        assert!(p.source_allowed(j, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!p.source_allowed(j, "127.0.0.2".parse().unwrap()));
        assert!(p.source_allowed(j, "2001:db8::5".parse().unwrap()));
    }

    #[test]
    fn invalid_config_does_not_compile() {
        let mut config = provision::starter_config("contoso.com").unwrap();
        config.journal[0].delivery_wait_attempts = 0;
        assert!(Policy::from_config(&config).unwrap_err().has_errors());
    }
}
