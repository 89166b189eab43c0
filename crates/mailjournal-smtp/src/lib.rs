//! The sans-IO SMTP session core of a journal connector.
//!
//! Owns the protocol: command parsing, the transaction state machine, the journal policy
//! checks and every protocol-level defence. The host feeds it received bytes and tells it what
//! happened (TLS established, message committed); it answers with replies to write and events
//! to act on. It owns no socket, no TLS library, no clock, no file and no thread.

pub mod reply;

pub use reply::{EnhancedCode, Reply};
