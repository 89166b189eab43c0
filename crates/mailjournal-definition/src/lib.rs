//! Journal service definitions and the rules that depend on them.
//!
//! This crate owns everything an administrator configures for journaling, as typed data:
//!
//! * [`JournalDefinition`]: the *Journal Service Definition* with every field of the
//!   specification and its default ([`journal`]);
//! * [`InternalDomain`] and [`Directory`]: internal domains, journal subdomains ("Add Subdomain")
//!   and the known internal mailboxes ([`directory`]);
//! * [`Config`]: the whole TOML/JSON configuration file read by the reference server ([`config`]);
//! * [`provision`]: what is created automatically from a primary domain;
//! * [`Config::validate`]: every problem at once, each with its field path and a hint
//!   ([`validate`]);
//! * [`Policy`]: the compiled, validated form the SMTP session and the pipeline use, and the
//!   archive decision ([`policy`]);
//! * [`region`]: the journal smart hosts per region, and [`m365`]: the Exchange Online PowerShell
//!   that performs the Microsoft 365 side of the setup.
//!
//! It never does IO beyond parsing the text it is handed: reading files and printing are the
//! caller's business.
//!
//! ```
//! use mailjournal_definition::{Config, provision};
//!
//! let config = provision::starter_config("contoso.com").unwrap();
//! assert_eq!(config.journal[0].service_email_address, "journaling@journal.contoso.com");
//! let report = config.validate();
//! assert!(!report.has_errors(), "{report}");
//! let text = config.to_toml().unwrap();
//! assert_eq!(Config::from_toml(&text).unwrap(), config);
//! ```

pub mod address;
pub mod config;
pub mod directory;
pub mod journal;
pub mod m365;
pub mod policy;
pub mod provision;
pub mod region;
pub mod validate;
pub mod webhook;

pub use address::{AddressError, EmailAddress};
pub use config::{
    AdminSettings, AlertSettings, ArchiveBackend, ArchiveSettings, Config, ConfigError, LegalHold,
    RetentionSettings, ServerSettings,
};
pub use directory::{Directory, InboundChecks, InternalDomain};
pub use journal::{JournalDefinition, JournalType, TransportType};
pub use policy::{AddressClass, ArchiveDecision, DropReason, Policy};
pub use validate::{Problem, Report, Severity};
pub use webhook::{WebhookUrl, WebhookUrlError};
