//! In-flow control: when archiving falls behind acceptance, sessions pause before each new
//! message, as Postfix's `in_flow_delay` does, so that the backlog (and the memory it holds)
//! stops growing instead of growing for as long as a flood lasts.
//!
//! Why: archiving an item can cost more CPU than accepting it. Under a sustained flood that
//! saturates the CPU (45 sessions of `smtp-source` with match attempts a second apart,
//! measured on 2026-12-01, when the pipeline still ran at a lower priority than the
//! sessions) the waiting items grew by ~800 a second and the server's memory by ~1.8 MB a
//! second, without end. The pipeline reports its lag, how long the oldest item that is due has
//! waited past its time; from [`BEHIND_FROM`] until it is back under [`CAUGHT_UP_BELOW`], each
//! session waits [`IN_FLOW_DELAY`] before it answers `DATA` (or takes the first `BDAT` chunk).
//! Every message is still accepted; senders are only slowed to what archiving keeps up with.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The pause before each new message while archiving is behind (Postfix's default
/// `in_flow_delay`).
pub const IN_FLOW_DELAY: Duration = Duration::from_secs(1);

/// Archiving counts as behind once it is this late ...
pub const BEHIND_FROM: Duration = Duration::from_secs(10);

/// ... and as caught up again once it is less late than this.
pub const CAUGHT_UP_BELOW: Duration = Duration::from_secs(2);

/// Whether archiving is behind: set by the pipeline, read by every session.
#[derive(Debug, Default)]
pub struct InFlow {
    behind: AtomicBool,
}

impl InFlow {
    /// The pipeline's lag now. Logs when sessions start or stop pausing.
    pub(crate) fn observe(&self, lag: Duration) {
        let was = self.behind.load(Ordering::Relaxed);
        let now = if was {
            lag >= CAUGHT_UP_BELOW
        } else {
            lag >= BEHIND_FROM
        };
        if now == was {
            return;
        }
        self.behind.store(now, Ordering::Relaxed);
        if now {
            tracing::warn!(
                lag_seconds = lag.as_secs(),
                "archiving is behind: sessions pause 1 s before each new message"
            );
        } else {
            tracing::info!(
                lag_ms = lag.as_millis() as u64,
                "archiving caught up: no more pauses"
            );
        }
    }

    /// How long a session waits before taking a new message: nothing unless archiving is
    /// behind.
    pub fn delay(&self) -> Option<Duration> {
        self.behind.load(Ordering::Relaxed).then_some(IN_FLOW_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_pause_from_ten_seconds_behind_until_under_two() {
        let in_flow = InFlow::default();
        assert_eq!(in_flow.delay(), None);
        in_flow.observe(Duration::from_secs(9));
        assert_eq!(in_flow.delay(), None, "9 s late is not behind yet");
        in_flow.observe(Duration::from_secs(10));
        assert_eq!(in_flow.delay(), Some(IN_FLOW_DELAY));
        in_flow.observe(Duration::from_secs(3));
        assert_eq!(in_flow.delay(), Some(IN_FLOW_DELAY), "still catching up");
        in_flow.observe(Duration::from_millis(1999));
        assert_eq!(in_flow.delay(), None);
        in_flow.observe(Duration::from_secs(5));
        assert_eq!(in_flow.delay(), None, "5 s late after catching up is fine");
    }
}
