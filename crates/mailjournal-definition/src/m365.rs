//! The Microsoft 365 side of the setup as Exchange Online PowerShell: the external mail contact,
//! the outbound (send) connector, the alternate journaling recipient and the journal rule, in
//! the order the specification performs them.

use std::fmt::Write as _;

use crate::address::{EmailAddress, is_same_or_subdomain, normalize_domain};
use crate::{Config, JournalDefinition};

/// Why no plan is produced: each is a setup the specification says cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The service address is not a valid address.
    #[error("journal service address {0:?} is not a valid address")]
    BadServiceAddress(String),
    /// The service address is one of the tenant's own mailboxes or on one of its mail domains.
    #[error(
        "{0} is a mailbox of the tenant: Microsoft does not support journaling to yourself; journal to a dedicated subdomain such as journal.<domain>"
    )]
    SelfJournaling(String),
    /// The undeliverable-reports address is the journal address itself.
    #[error(
        "the undeliverable-reports address must not be the journal address {0}: reports that cannot reach it would be sent to it again"
    )]
    NdrToJournalAddress(String),
    /// The undeliverable-reports address is not a valid address.
    #[error("undeliverable-reports address {0:?} is not a valid address")]
    BadNdrAddress(String),
    /// No smart hosts to route the journal domain through.
    #[error("the journal domain is not routed: give a region or at least one smart host")]
    NoSmartHosts,
    /// A smart host that is not a host name.
    #[error("smart host {0:?} is not a host name")]
    BadSmartHost(String),
    /// The definition is disabled: reports sent to it would be refused.
    #[error("journal definition {0:?} is disabled: it would refuse every report")]
    Disabled(String),
}

/// Produces the PowerShell plan for `journal` (a definition of `config`).
///
/// ```
/// use mailjournal_definition::{m365, provision, region};
/// let config = provision::starter_config("contoso.com").unwrap();
/// let hosts = region::lookup("eu").unwrap().smart_hosts;
/// let plan = m365::plan(&config, &config.journal[0], &hosts, "journal-ndr@contoso.com").unwrap();
/// assert!(plan.contains("New-JournalRule"));
/// assert!(m365::plan(&config, &config.journal[0], &hosts, "journaling@journal.contoso.com").is_err());
/// ```
pub fn plan(
    config: &Config,
    journal: &JournalDefinition,
    smart_hosts: &[impl AsRef<str>],
    ndr_to: &str,
) -> Result<String, PlanError> {
    let service = EmailAddress::parse(&journal.service_email_address)
        .map_err(|_| PlanError::BadServiceAddress(journal.service_email_address.clone()))?;
    if journal.disabled {
        return Err(PlanError::Disabled(journal.description.clone()));
    }
    let ndr = EmailAddress::parse(ndr_to).map_err(|_| PlanError::BadNdrAddress(ndr_to.into()))?;
    if ndr == service {
        return Err(PlanError::NdrToJournalAddress(service.to_string()));
    }
    let known = config
        .directory
        .known_addresses
        .iter()
        .filter_map(|a| EmailAddress::parse(a).ok())
        .any(|a| a == service);
    // A journal domain that is an internal domain but no subdomain of another one is a domain
    // the tenant hosts itself: mail to it would stay inside the tenant.
    let internal: Vec<String> = config
        .internal_domain
        .iter()
        .flat_map(|d| d.domains())
        .filter_map(|d| normalize_domain(d).ok())
        .collect();
    let under_tenant = internal
        .iter()
        .any(|parent| parent != service.domain() && is_same_or_subdomain(service.domain(), parent));
    let hosted_domain = !under_tenant && internal.iter().any(|d| d == service.domain());
    if known || hosted_domain {
        return Err(PlanError::SelfJournaling(service.to_string()));
    }
    if smart_hosts.is_empty() {
        return Err(PlanError::NoSmartHosts);
    }
    let mut hosts = Vec::new();
    for host in smart_hosts {
        let host = host.as_ref();
        hosts.push(normalize_domain(host).map_err(|_| PlanError::BadSmartHost(host.into()))?);
    }

    let domain = service.domain();
    let name = ps(&format!("Journaling to {domain}"));
    let hosts = hosts.iter().map(|h| ps(h)).collect::<Vec<_>>().join(",");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Microsoft 365 journaling setup for {:?} ({service}).\n# Run in Exchange Online PowerShell (Connect-ExchangeOnline) as an Exchange administrator.\n",
        journal.description
    );
    let _ = writeln!(
        out,
        "# Step 1: the external mail contact whose external address is the journal service address.\nNew-MailContact -Name {name} -ExternalEmailAddress {}\n",
        ps(service.as_str())
    );
    let _ = writeln!(
        out,
        "# Step 2: the send connector from Microsoft 365 to the partner organisation, used only for\n# the journal domain, routed through the journal smart hosts, always over TLS with a\n# certificate issued by a trusted CA.\nNew-OutboundConnector -Name {name} -ConnectorType Partner -RecipientDomains {} -UseMXRecord $false -SmartHosts {hosts} -TlsSettings CertificateValidation -Enabled $true\n",
        ps(domain)
    );
    let _ = writeln!(
        out,
        "# Step 3: the alternate journaling recipient for undeliverable journal reports.\nSet-TransportConfig -JournalingReportNdrTo {}\n",
        ps(ndr.as_str())
    );
    let _ = writeln!(
        out,
        "# Step 4: the journal rule: every user (no -Recipient), all messages (-Scope Global), sent to the contact.\nNew-JournalRule -Name {name} -JournalEmailAddress {} -Scope Global -Enabled $true",
        ps(service.as_str())
    );
    Ok(out)
}

/// A PowerShell single-quoted string literal: only `'` needs escaping, by doubling it.
fn ps(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InternalDomain, provision, region};

    const GOLDEN: &str = "# Microsoft 365 journaling setup for \"Microsoft 365\" (journaling@journal.contoso.com).
# Run in Exchange Online PowerShell (Connect-ExchangeOnline) as an Exchange administrator.

# Step 1: the external mail contact whose external address is the journal service address.
New-MailContact -Name 'Journaling to journal.contoso.com' -ExternalEmailAddress 'journaling@journal.contoso.com'

# Step 2: the send connector from Microsoft 365 to the partner organisation, used only for
# the journal domain, routed through the journal smart hosts, always over TLS with a
# certificate issued by a trusted CA.
New-OutboundConnector -Name 'Journaling to journal.contoso.com' -ConnectorType Partner -RecipientDomains 'journal.contoso.com' -UseMXRecord $false -SmartHosts 'de-smtp-journal-1.mimecast.com','de-smtp-journal-2.mimecast.com' -TlsSettings CertificateValidation -Enabled $true

# Step 3: the alternate journaling recipient for undeliverable journal reports.
Set-TransportConfig -JournalingReportNdrTo 'journal-ndr@contoso.com'

# Step 4: the journal rule: every user (no -Recipient), all messages (-Scope Global), sent to the contact.
New-JournalRule -Name 'Journaling to journal.contoso.com' -JournalEmailAddress 'journaling@journal.contoso.com' -Scope Global -Enabled $true
";

    #[test]
    fn golden_plan() {
        let config = provision::starter_config("contoso.com").unwrap();
        let hosts = region::lookup("de").unwrap().smart_hosts;
        let plan = plan(
            &config,
            &config.journal[0],
            &hosts,
            "journal-ndr@contoso.com",
        )
        .unwrap();
        assert_eq!(plan, GOLDEN);
    }

    #[test]
    fn refuses_setups_that_cannot_work() {
        let config = provision::starter_config("contoso.com").unwrap();
        let j = &config.journal[0];
        let hosts = ["eu-smtp-journal-1.mimecast.com"];
        assert_eq!(
            plan(&config, j, &hosts, "Journaling@Journal.Contoso.com"),
            Err(PlanError::NdrToJournalAddress(
                "journaling@journal.contoso.com".into()
            ))
        );
        assert_eq!(
            plan(&config, j, &[] as &[&str], "ndr@contoso.com"),
            Err(PlanError::NoSmartHosts)
        );
        assert_eq!(
            plan(&config, j, &["not a host"], "ndr@contoso.com"),
            Err(PlanError::BadSmartHost("not a host".into()))
        );

        let mut own = config.clone();
        own.journal[0].service_email_address = "archive@contoso.com".into();
        assert!(matches!(
            plan(&own, &own.journal[0], &hosts, "ndr@contoso.com"),
            Err(PlanError::SelfJournaling(_))
        ));

        let mut mailbox = config.clone();
        mailbox.directory.known_addresses = vec!["journaling@journal.contoso.com".into()];
        assert!(matches!(
            plan(&mailbox, &mailbox.journal[0], &hosts, "ndr@contoso.com"),
            Err(PlanError::SelfJournaling(_))
        ));

        let mut disabled = config.clone();
        disabled.journal[0].disabled = true;
        assert!(matches!(
            plan(&disabled, &disabled.journal[0], &hosts, "ndr@contoso.com"),
            Err(PlanError::Disabled(_))
        ));

        let mut extra = config;
        extra
            .internal_domain
            .push(InternalDomain::named("fabrikam.com"));
        assert!(plan(&extra, &extra.journal[0], &hosts, "ndr@contoso.com").is_ok());
    }

    #[test]
    fn quotes_are_escaped() {
        assert_eq!(ps("O'Brien"), "'O''Brien'");
    }
}
