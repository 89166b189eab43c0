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
//!   definition's options, then ask the archive policy what to archive;
//! * [`spool`] (feature `engine`): the durable spool, every message on disk before its `250`;
//! * [`archive`] (feature `engine`): the archive store's traits and, with feature `embedded`,
//!   its default backend (SQLite and files);
//! * [`engine`] (feature `engine`): the pipeline that joins spool, queue and archive, and the
//!   start-up order around it;
//! * [`status`] (feature `embedded`): a data directory's service status and queue details,
//!   read while its server runs.
//!
//! The engine is a module of this facade rather than a crate of its own because it is built
//! on [`ingest`]: a separate crate would need `ingest` moved out of the facade or a cycle.
//! Behind its feature (on by default), an application that only parses reports or drives the
//! sans-IO cores builds no SQLite and starts no thread.
//!
//! ```
//! use mailjournal::definition::provision;
//! let p = provision::provision("contoso.com").unwrap();
//! assert_eq!(p.service_email_address, "journaling@journal.contoso.com");
//! ```

#[cfg(feature = "engine")]
pub use mailjournal_archive as archive;
pub use mailjournal_definition as definition;
pub use mailjournal_envelope as envelope;
pub use mailjournal_queue as queue;
pub use mailjournal_smtp as smtp;
#[cfg(feature = "engine")]
pub use mailjournal_spool as spool;

#[cfg(feature = "engine")]
pub mod engine;
pub mod ingest;
#[cfg(feature = "embedded")]
pub mod status;
