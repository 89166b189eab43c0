//! The sans-IO SMTP session core of a journal connector.
//!
//! Owns the protocol: command parsing ([`command`]), the DATA receiver with dot-unstuffing and
//! end detection ([`data`]), replies ([`reply`]) and the session state machine ([`session`])
//! that enforces the admission rules ([`admission`]: who may send, to which address, over TLS,
//! with which credentials; the compiled journal definitions implement them) and every protocol-level defence of a trusted MTA. The host feeds it received
//! bytes and tells it what happened (TLS established, message committed); it answers with
//! replies to write and events to act on. It owns no socket, no TLS library, no clock, no file
//! and no thread.

pub mod admission;
pub mod command;
pub mod data;
pub mod reply;
pub mod session;

pub use admission::{Admission, JournalRules, RecipientKind};
pub use reply::{EnhancedCode, Reply};
pub use session::{
    AbortReason, Event, Recipient, Session, SessionConfig, Timeout, TlsInfo, Transaction,
};
