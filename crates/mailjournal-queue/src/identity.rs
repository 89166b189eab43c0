//! The identities every crate of the family shares: a journal item's queue id, the hash
//! that names stored content, and the names of an item's states. One type each, parsed once
//! at the edge and carried typed from there, never formatted and parsed again in between.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Identifies a journal item: the queue id of the `250 2.0.0 Ok: queued as <ID>` reply.
///
/// Printed as 16 upper-case hex digits (the `status` contract); parsed from 16 hex digits of
/// either case. Ids are ordered by arrival: the spool that hands them out puts the arrival
/// millisecond in the high bits.
///
/// ```
/// use mailjournal_queue::ItemId;
/// let id: ItemId = "0001A2B3C4D5E6F7".parse().unwrap();
/// assert_eq!(id, ItemId(0x0001_A2B3_C4D5_E6F7));
/// assert_eq!(id.to_string(), "0001A2B3C4D5E6F7");
/// assert!("1A2B".parse::<ItemId>().is_err());
/// assert!("../../etc/passwd".parse::<ItemId>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ItemId(pub u64);

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

/// Text that is not an identity of the kind asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not {expected}: {text:?}")]
pub struct ParseIdentityError {
    expected: &'static str,
    text: String,
}

impl ParseIdentityError {
    fn new(expected: &'static str, text: &str) -> Self {
        // A hostile input is quoted in errors and logs: keep it short.
        let text = text.chars().take(80).collect();
        ParseIdentityError { expected, text }
    }
}

impl FromStr for ItemId {
    type Err = ParseIdentityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // `from_str_radix` alone would take a sign and fewer digits.
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseIdentityError::new("a queue id (16 hex digits)", text));
        }
        u64::from_str_radix(text, 16)
            .map(ItemId)
            .map_err(|_| ParseIdentityError::new("a queue id (16 hex digits)", text))
    }
}

/// The SHA-256 of stored bytes: what names a message as received in the spool and an
/// archived form in the archive's content store. Printed and parsed as 64 lower-case hex
/// digits, which is also the content's file or object name, so a hash never names a path.
///
/// ```
/// use mailjournal_queue::ContentHash;
/// let hash = ContentHash([0xab; 32]);
/// let text = hash.to_string();
/// assert_eq!(text, "ab".repeat(32));
/// assert_eq!(text.parse::<ContentHash>(), Ok(hash));
/// assert!("AB".repeat(32).parse::<ContentHash>().is_err(), "one spelling per hash");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentHash(pub [u8; 32]);

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 64];
        for (pair, byte) in text.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

impl FromStr for ContentHash {
    type Err = ParseIdentityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseIdentityError::new("a content hash (64 lower-case hex digits)", text);
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        if text.len() != 64 {
            return Err(invalid());
        }
        let mut hash = [0u8; 32];
        for (byte, pair) in hash.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            *byte =
                (digit(pair[0]).ok_or_else(invalid)? << 4) | digit(pair[1]).ok_or_else(invalid)?;
        }
        Ok(ContentHash(hash))
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The state of a journal item, by name: one vocabulary for the queue, the archive index and
/// `status` (whose JSON shows [`as_str`](Self::as_str)).
///
/// The queue's [`ItemState`](crate::ItemState) maps onto the first eight; the archive also
/// records two that only it knows: an operator's retry request, and an item held in the spool
/// because its journal definition is no longer configured.
///
/// ```
/// use mailjournal_queue::StateName;
/// assert_eq!("not_archived".parse(), Ok(StateName::NotArchived));
/// assert_eq!(StateName::Merged.as_str(), "merged");
/// assert!(StateName::Archived.is_settled() && !StateName::Failed.is_settled());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateName {
    /// Waiting for its next step (initial delay, or between match attempts).
    Waiting,
    /// A match attempt is being made.
    Matching,
    /// Being archived as a new item.
    Archiving,
    /// Merged into an archived item with the same de-duplication key.
    Merged,
    /// Archived as a new item.
    Archived,
    /// Too old when it would have been processed.
    Expired,
    /// The archive policy dropped it.
    NotArchived,
    /// Parsing or storage failed; waits for a retry.
    Failed,
    /// An operator asked for a retry (`journal-server retry`); the engine picks it up.
    Retry,
    /// Its journal definition is not configured (removed meanwhile): kept in the spool,
    /// never archived under another definition, taken up again once it is configured.
    Held,
}

impl StateName {
    /// Every state, in the order above.
    pub const ALL: [StateName; 10] = [
        StateName::Waiting,
        StateName::Matching,
        StateName::Archiving,
        StateName::Merged,
        StateName::Archived,
        StateName::Expired,
        StateName::NotArchived,
        StateName::Failed,
        StateName::Retry,
        StateName::Held,
    ];

    /// The settled states: the item will not be processed again.
    pub const SETTLED: [StateName; 4] = [
        StateName::Archived,
        StateName::Merged,
        StateName::NotArchived,
        StateName::Expired,
    ];

    /// The name as `status` and the archive index spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            StateName::Waiting => "waiting",
            StateName::Matching => "matching",
            StateName::Archiving => "archiving",
            StateName::Merged => "merged",
            StateName::Archived => "archived",
            StateName::Expired => "expired",
            StateName::NotArchived => "not_archived",
            StateName::Failed => "failed",
            StateName::Retry => "retry",
            StateName::Held => "held",
        }
    }

    /// True once the item will not be processed again (see [`SETTLED`](Self::SETTLED)).
    pub fn is_settled(self) -> bool {
        Self::SETTLED.contains(&self)
    }
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StateName {
    type Err = ParseIdentityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        StateName::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| ParseIdentityError::new("an item state", text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_name_parses_back() {
        for state in StateName::ALL {
            assert_eq!(state.as_str().parse(), Ok(state));
        }
        assert!("Archived".parse::<StateName>().is_err());
    }

    #[test]
    fn queue_ids_take_exactly_sixteen_hex_digits() {
        assert_eq!("00000000000000ff".parse(), Ok(ItemId(255)));
        for bad in [
            "",
            "+00000000000000F",
            "0000000000000000F",
            "000000000000000G",
        ] {
            assert!(bad.parse::<ItemId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn content_hashes_round_trip_through_text_and_serde() {
        let hash = ContentHash(std::array::from_fn(|i| i as u8 * 7));
        assert_eq!(hash.to_string().parse(), Ok(hash));
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json, format!("\"{hash}\""));
        assert_eq!(serde_json::from_str::<ContentHash>(&json).unwrap(), hash);
        assert!(serde_json::from_str::<ContentHash>("\"zz\"").is_err());
    }
}
