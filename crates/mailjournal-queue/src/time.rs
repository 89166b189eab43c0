//! Time as plain numbers handed in by the host: milliseconds since the Unix epoch.

use serde::{Deserialize, Serialize};

/// A length of time in milliseconds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Duration(pub u64);

impl Duration {
    /// `n` minutes.
    pub const fn minutes(n: u64) -> Self {
        Duration(n.saturating_mul(60_000))
    }
    /// `n` seconds.
    pub const fn seconds(n: u64) -> Self {
        Duration(n.saturating_mul(1_000))
    }
    /// `n` days.
    pub const fn days(n: u64) -> Self {
        Duration(n.saturating_mul(86_400_000))
    }
    /// Milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
}

/// An instant: milliseconds since 1970-01-01T00:00:00Z.
///
/// ```
/// use mailjournal_queue::{Duration, Timestamp};
/// let t = Timestamp(1_000);
/// assert_eq!(t + Duration::seconds(2), Timestamp(3_000));
/// assert_eq!(Timestamp(3_000).since(t), Duration(2_000));
/// assert_eq!(t.since(Timestamp(3_000)), Duration(0));
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Time elapsed from `earlier` to `self`; zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }
}
