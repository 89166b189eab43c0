//! The journaling timing rules as deterministic, sans-IO state machines.
//!
//! Owns the connector service status (up / down / never seen / disabled, from the period of
//! inactivity allowed, [`status`]) and the journal item lifecycle (initial delay, match
//! attempts, merge or archive, expiry, [`lifecycle`]). It never reads a clock, sleeps, spawns
//! or touches a file: time is an argument ([`Timestamp`]), and the machines say what to do and
//! when to call them again.

mod due;
pub mod identity;
mod index;
pub mod lifecycle;
pub mod status;
pub mod time;

pub use identity::{ContentHash, ItemId, ParseIdentityError, StateName};
pub use lifecycle::{
    Action, Item, ItemMeta, ItemState, MatchResult, Queue, QueueDetails, QueueError, QueueParams,
    Snapshot, Timing,
};
pub use status::{Connector, ConnectorStatus, StatusChange};
pub use time::{Duration, Timestamp};
