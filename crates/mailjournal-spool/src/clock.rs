//! Where time comes from: the system clock in a server, a clock the test sets in tests.

use mailjournal_queue::Timestamp;

/// The current time, as the spool (and the engine around it) sees it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
///
/// ```
/// use mailjournal_spool::{Clock, SystemClock};
/// assert!(SystemClock.now().0 > 1_700_000_000_000, "after November 2023");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Timestamp(ms)
    }
}
