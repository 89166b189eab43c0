//! What is created automatically for a primary mail domain: the journal subdomain
//! `journal.<domain>`, the service address `journaling@journal.<domain>`, and a definition with
//! the specification's defaults.

use crate::address::{DomainError, normalize_domain};
use crate::{Config, InternalDomain, JournalDefinition};

/// The pieces provisioned for one primary domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The primary (tenant) domain, normalised.
    pub primary_domain: String,
    /// `journal.<primary domain>`.
    pub journal_subdomain: String,
    /// `journaling@journal.<primary domain>`.
    pub service_email_address: String,
    /// A definition with every default of the specification.
    pub definition: JournalDefinition,
}

/// Derives the journal subdomain, service address and default definition for `primary_domain`.
///
/// ```
/// let p = mailjournal_definition::provision::provision("Contoso.com").unwrap();
/// assert_eq!(p.journal_subdomain, "journal.contoso.com");
/// assert_eq!(p.service_email_address, "journaling@journal.contoso.com");
/// assert_eq!(p.definition.delivery_wait_attempts, 3);
/// ```
pub fn provision(primary_domain: &str) -> Result<Provisioned, DomainError> {
    let primary_domain = normalize_domain(primary_domain)?;
    let journal_subdomain = normalize_domain(&format!("journal.{primary_domain}"))?;
    let service_email_address = format!("journaling@{journal_subdomain}");
    let definition = JournalDefinition::new("Microsoft 365", service_email_address.clone());
    Ok(Provisioned {
        primary_domain,
        journal_subdomain,
        service_email_address,
        definition,
    })
}

/// A complete starter configuration for `primary_domain`: the tenant domain, its journal
/// subdomain with the journaling values, and the provisioned definition.
pub fn starter_config(primary_domain: &str) -> Result<Config, DomainError> {
    let p = provision(primary_domain)?;
    Ok(Config {
        server: crate::ServerSettings {
            hostname: format!("mx.{}", p.journal_subdomain),
            ..Default::default()
        },
        internal_domain: vec![
            InternalDomain {
                inbound_checks: crate::InboundChecks::DefaultChecks,
                ..InternalDomain::named(&p.primary_domain)
            },
            InternalDomain::named(&p.journal_subdomain),
        ],
        directory: Default::default(),
        journal: vec![p.definition],
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_domains() {
        assert_eq!(provision("contoso"), Err(DomainError::SingleLabel));
        assert!(provision("").is_err());
    }

    #[test]
    fn starter_config_validates_with_only_the_expected_warning() {
        let report = starter_config("fabrikam.co.uk").unwrap().validate();
        assert!(!report.has_errors(), "{report}");
        let warnings: Vec<_> = report.warnings().map(|p| p.path.as_str()).collect();
        assert_eq!(warnings, ["journal[0].additional_source_ip_ranges"]);
    }
}
