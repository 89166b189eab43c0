//! Mail journaling receiver engine: Microsoft 365 / Exchange journal reports over SMTP.
//!
//! This facade re-exports the crate family so an application needs one dependency:
//!
//! * [`definition`]: journal definitions, internal directory, validation, archive policy,
//!   regions and the Microsoft 365 setup plan;
//! * [`envelope`]: EEJ / EML journal item parsing with step-down detection;
//! * [`queue`]: connector service status and the journal item lifecycle (sans-IO);
//! * [`smtp`]: the sans-IO SMTP session core;
//! * [`ingest`]: the step that joins them for each accepted item: parse it with its journal
//!   definition's options, then ask the archive policy what to archive.
//!
//! ```
//! use mailjournal::definition::provision;
//! let p = provision::provision("contoso.com").unwrap();
//! assert_eq!(p.service_email_address, "journaling@journal.contoso.com");
//! ```

pub use mailjournal_definition as definition;
pub use mailjournal_envelope as envelope;
pub use mailjournal_queue as queue;
pub use mailjournal_smtp as smtp;

pub mod ingest;
