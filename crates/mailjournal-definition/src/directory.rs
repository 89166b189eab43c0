//! Users & Groups | Internal Directories: internal domains, journal subdomains and the
//! internal mailboxes the archive knows.

use serde::{Deserialize, Serialize};

/// Most subdomains one "Add Subdomain" may enter ("Enter up to 100 subdomains").
pub const MAX_SUBDOMAINS_PER_ADDITION: usize = 100;

/// The inbound checks applied to external messages sent to a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboundChecks {
    /// "Accept all Inbounds for this Domain": the journaling value, since journal reports come
    /// from Microsoft's servers carrying the tenant's own addresses.
    #[default]
    AcceptAllInbounds,
    /// The account's usual checks for external mail.
    DefaultChecks,
}

/// One entry of the internal directory: a domain, or one "Add Subdomain" addition of up to 100
/// names sharing the same settings.
///
/// Defaults are the specification's journaling values (accept all inbounds, no anti-spoofing
/// policy).
///
/// ```
/// use mailjournal_definition::{InternalDomain, InboundChecks};
/// let d: InternalDomain = toml::from_str(r#"names = ["journal.contoso.com", "journal.fabrikam.com"]"#).unwrap();
/// assert_eq!(d.inbound_checks, InboundChecks::AcceptAllInbounds);
/// assert!(!d.anti_spoofing_policy);
/// assert_eq!(d.domains().count(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalDomain {
    /// One domain name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Several names entered in one addition (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Inbound checks on external messages to these names.
    #[serde(default)]
    pub inbound_checks: InboundChecks,
    /// Apply anti-spoofing policies to messages to these names.
    #[serde(default)]
    pub anti_spoofing_policy: bool,
}

impl InternalDomain {
    /// A single domain with the journaling defaults.
    pub fn named(name: impl Into<String>) -> Self {
        InternalDomain {
            name: Some(name.into()),
            names: Vec::new(),
            inbound_checks: InboundChecks::AcceptAllInbounds,
            anti_spoofing_policy: false,
        }
    }

    /// Every name this entry holds, as written.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.name
            .as_deref()
            .into_iter()
            .chain(self.names.iter().map(String::as_str))
    }
}

/// The internal mailboxes known to the archive.
///
/// An empty list means no directory is configured: every internal address then counts as known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    /// Known internal addresses.
    #[serde(default)]
    pub known_addresses: Vec<String>,
}
