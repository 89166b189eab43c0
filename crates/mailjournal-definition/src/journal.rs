//! The Journal Service Definition (Archive | Journaling), field for field.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Default of [`JournalDefinition::initial_process_delay_minutes`] ("leave the default value (0)").
pub const DEFAULT_INITIAL_PROCESS_DELAY_MINUTES: u32 = 0;
/// Default of [`JournalDefinition::delivery_wait_attempts`] ("leave the default value (3)").
pub const DEFAULT_DELIVERY_WAIT_ATTEMPTS: u32 = 3;
/// Default of [`JournalDefinition::period_of_inactivity_allowed_minutes`] ("default = 180 minutes").
pub const DEFAULT_PERIOD_OF_INACTIVITY_ALLOWED_MINUTES: u32 = 180;

/// How journal items reach the service. The specification knows one value, SMTP; anything else
/// is kept so that validation can name it instead of failing the whole parse.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TransportType {
    /// Journal reports arrive over SMTP.
    #[default]
    Smtp,
    /// A value the specification does not offer; always a validation error.
    Unsupported(String),
}

impl Serialize for TransportType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            TransportType::Smtp => serializer.serialize_str("smtp"),
            TransportType::Unsupported(other) => serializer.serialize_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for TransportType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(if text.eq_ignore_ascii_case("smtp") {
            TransportType::Smtp
        } else {
            TransportType::Unsupported(text)
        })
    }
}

/// The format the journal items of a definition arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalType {
    /// Exchange Envelope Journaling: a journal report that names every real recipient,
    /// Bcc included. Malformed reports "step down" to EML.
    #[default]
    Eej,
    /// Standard EML: recipients only from the message headers (no Bcc).
    Eml,
}

/// One Journal Service Definition.
///
/// Field names follow the specification; every field has the specification's default, so a
/// definition needs only its description and service address.
///
/// ```
/// use mailjournal_definition::{JournalDefinition, JournalType};
/// let def: JournalDefinition = toml::from_str(r#"
///     description = "Microsoft 365"
///     service_email_address = "journaling@journal.contoso.com"
/// "#).unwrap();
/// assert!(def.encrypted);
/// assert_eq!(def.delivery_wait_attempts, 3);
/// assert_eq!(def.period_of_inactivity_allowed_minutes, 180);
/// assert_eq!(def.journal_type, JournalType::Eej);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalDefinition {
    /// A name for the definition.
    pub description: String,
    /// Always SMTP.
    #[serde(default)]
    pub transport_type: TransportType,
    /// When set, the definition is not active: its address accepts nothing.
    #[serde(default)]
    pub disabled: bool,
    /// The journal address, `journaling@journal.<primary domain>`; with authentication on, also
    /// the SMTP-AUTH user name.
    pub service_email_address: String,
    /// CIDR ranges (a single address is written `/32` or `/128`) allowed to send, besides the
    /// server's authorized outbound ranges.
    #[serde(default)]
    pub additional_source_ip_ranges: Vec<String>,
    /// Require SMTP AUTH with the service address and [`password`](Self::password).
    #[serde(default)]
    pub use_smtp_authentication: bool,
    /// The SMTP-AUTH password; required when authentication is on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// Minutes to wait before the first attempt to match an item to the archive.
    #[serde(default = "default_initial_process_delay")]
    pub initial_process_delay_minutes: u32,
    /// How many match attempts are made before an item is archived as new.
    #[serde(default = "default_delivery_wait_attempts")]
    pub delivery_wait_attempts: u32,
    /// Minutes without any message after which the connector is reported "down".
    #[serde(default = "default_period_of_inactivity")]
    pub period_of_inactivity_allowed_minutes: u32,
    /// EEJ (journal reports) or standard EML.
    #[serde(default)]
    pub journal_type: JournalType,
    /// Accept journal messages only over TLS (default on).
    #[serde(default = "default_true")]
    pub encrypted: bool,
    /// For rights-protected items: archive the decrypted copy Exchange adds.
    #[serde(default)]
    pub prefer_clear_text_version: bool,
    /// Wait ten minutes for the gateway copy before archiving an item as new.
    #[serde(default)]
    pub extended_deduplication: bool,
    /// Remove `X-MS-Exchange-Organization-BCC` and `X-MS-Exchange-CrossPremises-BCC` from the
    /// archived message.
    #[serde(default)]
    pub remove_journal_headers: bool,
    /// Archive messages that hold no internal address at all.
    #[serde(default)]
    pub journal_non_internal_addresses: bool,
    /// Archive messages sent from or to internal addresses the directory does not know.
    #[serde(default)]
    pub journal_unknown_internal_addresses: bool,
    /// Days an archived message is kept, counted from when its first report was accepted;
    /// then it is deleted (unless a legal hold covers it). Absent: kept for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

impl JournalDefinition {
    /// A definition with the specification's defaults for every field.
    ///
    /// ```
    /// use mailjournal_definition::JournalDefinition;
    /// let def = JournalDefinition::new("Microsoft 365", "journaling@journal.contoso.com");
    /// assert!(def.encrypted && !def.disabled && def.initial_process_delay_minutes == 0);
    /// ```
    pub fn new(description: impl Into<String>, service_email_address: impl Into<String>) -> Self {
        JournalDefinition {
            description: description.into(),
            transport_type: TransportType::Smtp,
            disabled: false,
            service_email_address: service_email_address.into(),
            additional_source_ip_ranges: Vec::new(),
            use_smtp_authentication: false,
            password: String::new(),
            initial_process_delay_minutes: DEFAULT_INITIAL_PROCESS_DELAY_MINUTES,
            delivery_wait_attempts: DEFAULT_DELIVERY_WAIT_ATTEMPTS,
            period_of_inactivity_allowed_minutes: DEFAULT_PERIOD_OF_INACTIVITY_ALLOWED_MINUTES,
            journal_type: JournalType::Eej,
            encrypted: true,
            prefer_clear_text_version: false,
            extended_deduplication: false,
            remove_journal_headers: false,
            journal_non_internal_addresses: false,
            journal_unknown_internal_addresses: false,
            retention_days: None,
        }
    }
}

fn default_initial_process_delay() -> u32 {
    DEFAULT_INITIAL_PROCESS_DELAY_MINUTES
}
fn default_delivery_wait_attempts() -> u32 {
    DEFAULT_DELIVERY_WAIT_ATTEMPTS
}
fn default_period_of_inactivity() -> u32 {
    DEFAULT_PERIOD_OF_INACTIVITY_ALLOWED_MINUTES
}
fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_defaults_equal_new() {
        let parsed: JournalDefinition = toml::from_str(
            "description = \"d\"\nservice_email_address = \"journaling@journal.contoso.com\"",
        )
        .unwrap();
        assert_eq!(
            parsed,
            JournalDefinition::new("d", "journaling@journal.contoso.com")
        );
    }

    #[test]
    fn unknown_transport_is_kept_for_validation() {
        let parsed: JournalDefinition = toml::from_str(
            "description = \"d\"\nservice_email_address = \"a@b.c\"\ntransport_type = \"POP3\"",
        )
        .unwrap();
        assert_eq!(
            parsed.transport_type,
            TransportType::Unsupported("POP3".into())
        );
        let smtp: JournalDefinition = toml::from_str(
            "description = \"d\"\nservice_email_address = \"a@b.c\"\ntransport_type = \"SMTP\"",
        )
        .unwrap();
        assert_eq!(smtp.transport_type, TransportType::Smtp);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = toml::from_str::<JournalDefinition>(
            "description = \"d\"\nservice_email_address = \"a@b.c\"\nencrypt = true",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `encrypt`"), "{err}");
    }
}
