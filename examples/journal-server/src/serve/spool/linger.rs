//! Commit linger: the committer may hold a batch briefly for messages still being received, so
//! that they share its sync instead of each waiting for one of their own.
//!
//! Without it, group commit only groups what arrived during the previous sync: on a disk whose
//! `fdatasync` costs ~250 µs and ~130 µs of CPU whatever it carries, 20 busy sessions got 1.4
//! to 2.7 messages per sync; with it, about 6. The wait is bounded by about one recent sync
//! time: a message that reaches the committer just after a sync starts would otherwise wait
//! for that sync and then its own, so waiting up to one sync for it costs it nothing and costs
//! the batch at most one sync. The committer waits only while some message is between DATA
//! and its commit request, so a lone client's `250` never waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// One message being received, counted while it lives (from DATA until its commit request is
/// sent, or the message ends without one).
pub(super) struct Receiving(Arc<AtomicUsize>);

impl Receiving {
    pub(super) fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Receiving(count.clone())
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// No linger waits longer than this, whatever it is configured to: past it, a sync is cheaper
/// than the wait.
pub(super) const LINGER_CEILING: Duration = Duration::from_secs(1);

/// How long the committer may wait: the recent sync time, never more than a maximum.
#[derive(Debug, Clone, Copy)]
pub(super) struct Linger {
    max: Duration,
    /// A moving average of the time one batch's write and sync took.
    sync_time: Duration,
}

impl Linger {
    /// Starts at the maximum (at most [`LINGER_CEILING`]), until the first sync says what a
    /// sync costs here.
    pub(super) fn new(max: Duration) -> Self {
        let max = max.min(LINGER_CEILING);
        Linger {
            max,
            sync_time: max,
        }
    }

    /// The longest the next batch may wait.
    pub(super) fn bound(&self) -> Duration {
        self.sync_time.min(self.max)
    }

    /// Takes the time one batch's write and sync took into the average (weight 1/8: one slow
    /// sync moves it, a slow disk soon shows).
    pub(super) fn observe(&mut self, took: Duration) {
        self.sync_time = self.sync_time.saturating_mul(7).saturating_add(took) / 8;
    }
}

/// Adds to `batch` what arrives from `rx` while some message is still being received
/// (`receiving`), for at most `bound`. Returns early once none is, or the channel closed.
pub(super) fn gather<T>(
    rx: &Receiver<T>,
    batch: &mut Vec<T>,
    receiving: &AtomicUsize,
    bound: Duration,
) {
    if bound.is_zero() {
        return;
    }
    let Some(until) = Instant::now().checked_add(bound) else {
        return;
    };
    while receiving.load(Ordering::Relaxed) > 0 {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(more) => batch.push(more),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn the_bound_follows_recent_syncs_and_never_passes_the_maximum() {
        let mut linger = Linger::new(Duration::from_millis(2));
        assert_eq!(linger.bound(), Duration::from_millis(2), "before any sync");
        for _ in 0..64 {
            linger.observe(Duration::from_micros(250));
        }
        let bound = linger.bound();
        assert!(
            bound >= Duration::from_micros(250) && bound < Duration::from_micros(260),
            "{bound:?}"
        );
        for _ in 0..64 {
            linger.observe(Duration::from_millis(40));
        }
        assert_eq!(
            linger.bound(),
            Duration::from_millis(2),
            "a slow disk: the maximum"
        );
        let mut off = Linger::new(Duration::ZERO);
        off.observe(Duration::from_millis(1));
        assert_eq!(off.bound(), Duration::ZERO);
        // Whatever the configuration or the disk says, nothing overflows or waits past the
        // ceiling.
        let mut huge = Linger::new(Duration::MAX);
        assert_eq!(huge.bound(), LINGER_CEILING);
        huge.observe(Duration::MAX);
        assert_eq!(huge.bound(), LINGER_CEILING);
    }

    #[test]
    fn gathering_stops_once_nothing_is_being_received() {
        let count = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let receiving = Receiving::start(&count);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            // As a session does: its ticket ends before its request is sent.
            drop(receiving);
            tx.send(2).unwrap();
            tx // kept open: the wait must end because nothing is being received
        });
        let mut batch = vec![1];
        let started = Instant::now();
        gather(&rx, &mut batch, &count, Duration::from_secs(30));
        assert_eq!(batch, vec![1, 2]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waited out the bound"
        );
        drop(sender.join().unwrap());
    }

    #[test]
    fn nothing_being_received_means_no_wait() {
        let count = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel::<u32>();
        let mut batch = vec![1];
        let started = Instant::now();
        gather(&rx, &mut batch, &count, Duration::from_secs(30));
        assert_eq!(batch, vec![1]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waited out the bound"
        );
        drop(tx);
    }

    #[test]
    fn a_message_that_never_commits_holds_the_batch_only_for_the_bound() {
        let count = Arc::new(AtomicUsize::new(0));
        let _stuck = Receiving::start(&count);
        let (tx, rx) = mpsc::channel::<u32>();
        let mut batch = vec![1];
        let started = Instant::now();
        gather(&rx, &mut batch, &count, Duration::from_millis(50));
        assert_eq!(batch, vec![1]);
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "did not wait"
        );
        drop(tx);
    }
}
