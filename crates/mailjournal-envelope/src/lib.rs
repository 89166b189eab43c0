//! Journal item parsing: Exchange envelope journal reports (EEJ) and plain EML.
//!
//! Given the raw bytes of an item that arrived at a journal address, this crate says who sent
//! it, who really received it (Bcc and expanded group members included) and where the original
//! message lies, borrowing from the input. It never panics and never decodes attachments: the
//! report structure is found with one linear `memchr` scan.
//!
//! It owns parsing only: no IO, no policy (whether to archive is
//! `mailjournal-definition`'s decision), no storage.

pub mod decode;
pub mod eml;
pub mod envelope;
pub mod header;
pub mod item;
pub mod mime;

pub use envelope::{Envelope, Recipient, RecipientField};
pub use item::{Format, JournalItem, ParseOptions, ReportVersion, Span, StepDown};
