//! The configuration file read by the reference server (the TOML contract of `DESIGN.md`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Directory, InternalDomain, JournalDefinition};

/// Exchange Online's largest message, and the default size limit: 150 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE_BYTES: u64 = 150 * 1024 * 1024;
/// Default cap on simultaneous connections.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1000;
/// Default space kept free on the data directory's file system: 256 MiB.
pub const DEFAULT_FREE_SPACE_RESERVE_BYTES: u64 = 256 * 1024 * 1024;

/// The `[server]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Socket addresses to listen on.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Name used in the greeting and the EHLO reply.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Spool, archive and state.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// PEM certificate chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_private_key: Option<PathBuf>,
    /// CIDR ranges always allowed to send to every definition.
    #[serde(default)]
    pub authorized_outbound_ranges: Vec<String>,
    /// Largest message accepted, in bytes.
    #[serde(default = "default_max_message_size")]
    pub max_message_size_bytes: u64,
    /// Most simultaneous connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Bytes that must stay free on the data directory's file system: below that, mail is
    /// answered `452 4.3.1` (the client tries again later) instead of filling the disk.
    #[serde(default = "default_free_space_reserve")]
    pub free_space_reserve_bytes: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: default_listen(),
            hostname: default_hostname(),
            data_dir: default_data_dir(),
            tls_certificate: None,
            tls_private_key: None,
            authorized_outbound_ranges: Vec::new(),
            max_message_size_bytes: DEFAULT_MAX_MESSAGE_SIZE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            free_space_reserve_bytes: DEFAULT_FREE_SPACE_RESERVE_BYTES,
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:2525".to_owned()]
}
fn default_hostname() -> String {
    "localhost.localdomain".to_owned()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("journal-data")
}
fn default_max_message_size() -> u64 {
    DEFAULT_MAX_MESSAGE_SIZE_BYTES
}
fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}
fn default_free_space_reserve() -> u64 {
    DEFAULT_FREE_SPACE_RESERVE_BYTES
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener and storage settings.
    #[serde(default)]
    pub server: ServerSettings,
    /// Internal domains and journal subdomains.
    #[serde(default)]
    pub internal_domain: Vec<InternalDomain>,
    /// Known internal mailboxes.
    #[serde(default)]
    pub directory: Directory,
    /// Journal Service Definitions.
    #[serde(default)]
    pub journal: Vec<JournalDefinition>,
    /// How long what is not archived per definition is kept.
    #[serde(default, skip_serializing_if = "RetentionSettings::is_default")]
    pub retention: RetentionSettings,
    /// Legal holds: what they cover is never deleted by retention while they stand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legal_hold: Vec<LegalHold>,
    /// The admin HTTP listener (metrics, health, the journaling page); absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminSettings>,
    /// Webhooks told of every connector status change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alert: Vec<AlertSettings>,
    /// Where the archive is (absent: the embedded default under `data_dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveSettings>,
}

/// Which archive backend a receiver uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveBackend {
    /// SQLite and files under `data_dir`: one receiver.
    #[default]
    Embedded,
    /// PostgreSQL and S3-compatible object storage, shared by several receivers.
    Shared,
}

/// The `[archive]` table. With `backend = "shared"`, the S3 credentials come from
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` or the `*_file` keys, and a PostgreSQL
/// password from the URL or `PGPASSWORD`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSettings {
    /// The backend.
    #[serde(default)]
    pub backend: ArchiveBackend,
    /// This receiver's name, unique among those sharing the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// `postgres://user@host:port/database`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_url: Option<String>,
    /// The S3 endpoint (absent: AWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// The S3 region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_region: Option<String>,
    /// The bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_bucket: Option<String>,
    /// A file holding the S3 access key id (instead of `AWS_ACCESS_KEY_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_access_key_id_file: Option<PathBuf>,
    /// A file holding the S3 secret key (instead of `AWS_SECRET_ACCESS_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_secret_access_key_file: Option<PathBuf>,
}

/// Where the admin listener listens when `[admin]` names no address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8025";

/// The `[admin]` table: the HTTP listener for `/metrics`, `/healthz`, `/readyz` and the
/// journaling page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Socket addresses (loopback by default).
    #[serde(default = "default_admin_listen")]
    pub listen: Vec<String>,
    /// A file holding a bearer token. When set, message content, envelope recipients and
    /// queue details need `Authorization: Bearer <token>`; the health checks and the
    /// metrics (counts only) do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: default_admin_listen(),
            token_file: None,
        }
    }
}

fn default_admin_listen() -> Vec<String> {
    vec![DEFAULT_ADMIN_LISTEN.to_owned()]
}

/// One `[[alert]]`: a webhook that receives a JSON document for every connector status
/// change (`up` to `down`, `down` to `up`, a never-seen connector's first message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// `http://` or `https://` URL the alert is POSTed to.
    pub webhook_url: String,
}

/// The `[retention]` table (each definition's archived messages: its `retention_days`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Days the as-received copies (retired spool segments, read by `get --as-received`)
    /// are kept after the spool retired them. Absent: kept for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_received_days: Option<u32>,
}

impl RetentionSettings {
    fn is_default(&self) -> bool {
        *self == RetentionSettings::default()
    }
}

/// One `[[legal_hold]]`: an address (every message it sent or received, Bcc and expanded
/// groups included) or one item (the archived message it is part of).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalHold {
    /// The address held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The queue id held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Why (a case reference, say): shown in the log.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A configuration text that could not be read as a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}: {message}", .line, .column)]
pub struct ConfigError {
    /// 1-based line of the offending text (1 when unknown).
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn at(text: &str, offset: Option<usize>, message: String) -> Self {
        let offset = offset.unwrap_or(0).min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError {
            line,
            column,
            message,
        }
    }
}

impl Config {
    /// Parses the TOML form. Unknown keys are errors, reported with line and column.
    ///
    /// ```
    /// use mailjournal_definition::Config;
    /// let err = Config::from_toml("[server]\nlisten = [\"127.0.0.1:25\"]\nport = 25\n").unwrap_err();
    /// assert_eq!((err.line, err.column), (3, 1));
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            ConfigError::at(
                text,
                e.span().map(|s| s.start),
                e.message().trim_end().to_owned(),
            )
        })
    }

    /// Parses the JSON form (same keys as the TOML form).
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError {
            line: e.line().max(1),
            column: e.column().max(1),
            message: e.to_string(),
        })
    }

    /// Writes the TOML form.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Writes the JSON form.
    pub fn to_json(&self) -> String {
        // A Config holds only strings, numbers, booleans and lists: serialisation cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of DESIGN.md, verbatim: the contract users copy.
    pub(crate) const DESIGN_EXAMPLE: &str = r#"
[server]
listen = ["127.0.0.1:2525"]            # one or more socket addresses
hostname = "mx.journal.example.com"    # used in the greeting and EHLO reply
data_dir = "journal-data"              # spool, archive, state
tls_certificate = "cert.pem"           # PEM chain; absent in --dev mode (self-signed is generated)
tls_private_key = "key.pem"
authorized_outbound_ranges = []        # CIDR; always allowed to send to every definition
max_message_size_bytes = 157286400     # 150 MiB
max_connections = 1000
free_space_reserve_bytes = 268435456  # 256 MiB kept free: below it, 452 4.3.1

[[internal_domain]]                    # Users & Groups | Internal Directories
name = "example.com"

[[internal_domain]]                    # the journal subdomain ("Add Subdomain")
name = "journal.example.com"
inbound_checks = "accept_all_inbounds"
anti_spoofing_policy = false

[directory]
known_addresses = ["alice@example.com", "bob@example.com"]   # internal mailboxes known to the archive

[[journal]]                            # Archive | Journaling | Journal Service Definition
description = "Microsoft 365"
transport_type = "smtp"
disabled = false
service_email_address = "journaling@journal.example.com"
additional_source_ip_ranges = ["203.0.113.0/24", "198.51.100.7/32"]
use_smtp_authentication = false
password = ""                          # required when use_smtp_authentication = true
initial_process_delay_minutes = 0
delivery_wait_attempts = 3
period_of_inactivity_allowed_minutes = 180
journal_type = "eej"                   # "eej" | "eml"
encrypted = true                       # accept only over TLS
prefer_clear_text_version = false
extended_deduplication = false
remove_journal_headers = false
journal_non_internal_addresses = false
journal_unknown_internal_addresses = false
"#;

    #[test]
    fn design_example_parses_validates_and_round_trips() {
        let config = Config::from_toml(DESIGN_EXAMPLE).unwrap();
        assert_eq!(config.server.max_message_size_bytes, 157_286_400);
        assert_eq!(config.internal_domain.len(), 2);
        assert_eq!(config.journal[0].additional_source_ip_ranges.len(), 2);
        let report = config.validate();
        assert!(!report.has_errors(), "{report}");
        assert_eq!(
            Config::from_toml(&config.to_toml().unwrap()).unwrap(),
            config
        );
        assert_eq!(Config::from_json(&config.to_json()).unwrap(), config);
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = Config::from_toml("[server]\nmax_connections = \"many\"\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(err.column, 19);
        assert!(
            err.message.contains("u32") || err.message.contains("integer"),
            "{err}"
        );
        let err = Config::from_json("{\"server\": {\"listen\": 5}}").unwrap_err();
        assert_eq!(err.line, 1);
    }
}
