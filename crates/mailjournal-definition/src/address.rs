//! Mailbox addresses (`local@domain`) as configuration and the archive policy see them.
//!
//! Exchange compares addresses case-insensitively, local part included, so the normalised form
//! used for every comparison is the ASCII-lowercased address. Limits are RFC 5321 §4.5.3.1:
//! 64 octets of local part, 255 of domain, 254 for the whole address (256 with the angle
//! brackets of a path).

use std::fmt;

/// Longest local part (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Longest address: a path is at most 256 octets including `<` and `>` (RFC 5321 §4.5.3.1.3).
pub const MAX_ADDRESS: usize = 254;

/// Why a string is not a usable mailbox address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `@` separates a local part from a domain.
    #[error("no '@' between local part and domain")]
    MissingAt,
    /// The part before the `@` is empty.
    #[error("empty local part")]
    EmptyLocalPart,
    /// The local part is longer than 64 octets.
    #[error("local part longer than {MAX_LOCAL_PART} octets")]
    LocalPartTooLong,
    /// The local part holds a character an unquoted local part may not hold.
    #[error("local part holds {0:?}, which needs quoting")]
    BadLocalPart(char),
    /// The address is longer than 254 octets.
    #[error("address longer than {MAX_ADDRESS} octets")]
    TooLong,
    /// The domain is not a valid host name.
    #[error("domain: {0}")]
    Domain(#[from] DomainError),
}

/// Why a string is not a usable domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Nothing to parse.
    #[error("empty domain")]
    Empty,
    /// More than 255 octets.
    #[error("longer than {MAX_DOMAIN} octets")]
    TooLong,
    /// Two dots in a row, or a leading or trailing dot.
    #[error("empty label")]
    EmptyLabel,
    /// A label over 63 octets.
    #[error("label longer than 63 octets")]
    LabelTooLong,
    /// A label that starts or ends with `-`.
    #[error("label starts or ends with '-'")]
    Hyphen,
    /// A character that is not a letter, digit or hyphen.
    #[error("{0:?} is not allowed in a host name")]
    BadChar(char),
    /// A single-label name such as `localhost` cannot be a mail domain here.
    #[error("a mail domain needs at least two labels")]
    SingleLabel,
}

/// Normalises and checks a domain name: ASCII-lowercased, one trailing dot removed.
///
/// Non-ASCII letters are accepted (internationalised domains in U-label form), ASCII is
/// restricted to letters, digits and hyphens.
///
/// ```
/// use mailjournal_definition::address::normalize_domain;
/// assert_eq!(normalize_domain("Journal.Contoso.COM.").unwrap(), "journal.contoso.com");
/// assert!(normalize_domain("contoso..com").is_err());
/// ```
pub fn normalize_domain(domain: &str) -> Result<String, DomainError> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err(DomainError::Empty);
    }
    if domain.len() > MAX_DOMAIN {
        return Err(DomainError::TooLong);
    }
    let mut labels = 0;
    for label in domain.split('.') {
        labels += 1;
        if label.is_empty() {
            return Err(DomainError::EmptyLabel);
        }
        if label.len() > 63 {
            return Err(DomainError::LabelTooLong);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(DomainError::Hyphen);
        }
        if let Some(c) = label
            .chars()
            .find(|c| c.is_ascii() && !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(DomainError::BadChar(c));
        }
    }
    if labels < 2 {
        return Err(DomainError::SingleLabel);
    }
    Ok(domain.to_ascii_lowercase())
}

/// A checked mailbox address in normalised (lowercase) form.
///
/// ```
/// use mailjournal_definition::EmailAddress;
/// let a = EmailAddress::parse("Journaling@Journal.Contoso.com").unwrap();
/// assert_eq!(a.as_str(), "journaling@journal.contoso.com");
/// assert_eq!(a.local_part(), "journaling");
/// assert_eq!(a.domain(), "journal.contoso.com");
/// assert!(EmailAddress::parse("no-at-sign").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress {
    normalized: String,
    at: usize,
}

impl EmailAddress {
    /// Parses `local@domain` (no angle brackets, no display name).
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let at = text.rfind('@').ok_or(AddressError::MissingAt)?;
        let (local, domain) = (&text[..at], &text[at + 1..]);
        if local.is_empty() {
            return Err(AddressError::EmptyLocalPart);
        }
        if local.len() > MAX_LOCAL_PART {
            return Err(AddressError::LocalPartTooLong);
        }
        check_local_part(local)?;
        let domain = normalize_domain(domain)?;
        let normalized = format!("{}@{domain}", local.to_ascii_lowercase());
        if normalized.len() > MAX_ADDRESS {
            return Err(AddressError::TooLong);
        }
        Ok(EmailAddress { normalized, at })
    }

    /// The whole normalised address.
    pub fn as_str(&self) -> &str {
        &self.normalized
    }

    /// The part before the `@`, lowercased.
    pub fn local_part(&self) -> &str {
        &self.normalized[..self.at]
    }

    /// The domain, lowercased, without a trailing dot.
    pub fn domain(&self) -> &str {
        &self.normalized[self.at + 1..]
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized)
    }
}

/// A dot-atom local part (RFC 5322 `atext` plus dots, UTF-8 allowed per RFC 6531) or a
/// quoted string.
fn check_local_part(local: &str) -> Result<(), AddressError> {
    if local.len() >= 2 && local.starts_with('"') && local.ends_with('"') {
        return match local[1..local.len() - 1]
            .chars()
            .find(|c| c.is_ascii_control())
        {
            Some(c) => Err(AddressError::BadLocalPart(c)),
            None => Ok(()),
        };
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(AddressError::BadLocalPart('.'));
    }
    const ATEXT_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";
    match local
        .chars()
        .find(|c| c.is_ascii() && !(c.is_ascii_alphanumeric() || ATEXT_SPECIALS.contains(*c)))
    {
        Some(c) => Err(AddressError::BadLocalPart(c)),
        None => Ok(()),
    }
}

/// True when `domain` is `parent` or a subdomain of it (both already normalised).
///
/// ```
/// use mailjournal_definition::address::is_same_or_subdomain;
/// assert!(is_same_or_subdomain("journal.contoso.com", "contoso.com"));
/// assert!(!is_same_or_subdomain("notcontoso.com", "contoso.com"));
/// ```
pub fn is_same_or_subdomain(domain: &str, parent: &str) -> bool {
    domain == parent
        || (domain.len() > parent.len()
            && domain.ends_with(parent)
            && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_rfc5321() {
        let local = "a".repeat(64);
        assert!(EmailAddress::parse(&format!("{local}@contoso.com")).is_ok());
        assert_eq!(
            EmailAddress::parse(&format!("{local}a@contoso.com")),
            Err(AddressError::LocalPartTooLong)
        );
        let label = "b".repeat(63);
        let long_domain = format!("{label}.{label}.{label}.{}.com", "c".repeat(50));
        assert_eq!(
            EmailAddress::parse(&format!("{local}@{long_domain}")),
            Err(AddressError::TooLong)
        );
    }

    #[test]
    fn rejects_bad_local_parts_and_domains() {
        assert_eq!(
            EmailAddress::parse("a b@contoso.com"),
            Err(AddressError::BadLocalPart(' '))
        );
        assert_eq!(
            EmailAddress::parse(".a@contoso.com"),
            Err(AddressError::BadLocalPart('.'))
        );
        assert!(EmailAddress::parse("\"a b\"@contoso.com").is_ok());
        assert_eq!(
            EmailAddress::parse("a@-contoso.com"),
            Err(AddressError::Domain(DomainError::Hyphen))
        );
        assert_eq!(
            EmailAddress::parse("a@localhost"),
            Err(AddressError::Domain(DomainError::SingleLabel))
        );
        assert_eq!(
            EmailAddress::parse("a@contoso_x.com"),
            Err(AddressError::Domain(DomainError::BadChar('_')))
        );
        assert!(EmailAddress::parse("pelé@exämple.com").is_ok());
    }

    #[test]
    fn subdomain_test_respects_label_boundaries() {
        assert!(is_same_or_subdomain("contoso.com", "contoso.com"));
        assert!(is_same_or_subdomain("a.b.contoso.com", "contoso.com"));
        assert!(!is_same_or_subdomain("xcontoso.com", "contoso.com"));
        assert!(!is_same_or_subdomain("com", "contoso.com"));
    }
}
