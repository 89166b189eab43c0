//! Commit linger: the committer may hold a batch briefly for messages still being received, so
//! that they share its sync instead of each waiting for one of their own.
//!
//! Without it, group commit only groups what arrived during the previous sync: on a disk whose
//! `fdatasync` costs ~250 µs and ~130 µs of CPU whatever it carries, 20 busy sessions got 1.4
//! to 2.7 messages per sync; with it, about 6. The wait is bounded by about one recent sync
//! time: a message that reaches the committer just after a sync starts would otherwise wait
//! for that sync and then its own, so waiting up to one sync for it costs it nothing and costs
//! the batch at most one sync. The committer waits only while some message is between DATA
//! and its commit request, so a lone client's `250` never waits; it sleeps through the
//! requests that arrive meanwhile and is woken once, by the last of them (one wake-up per
//! message before: 9 600 against 6 800 committer context switches for 10 000 messages).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// The messages being received (from DATA until their commit request is sent), which a batch
/// may wait for, and the committer to wake when the last of them has sent its request.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    /// Set by [`gather`] on its first call: the one thread that gathers batches.
    committer: OnceLock<Thread>,
}

impl InFlight {
    fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }
}

/// One message being received, counted while it lives. Dropped after its commit request is
/// sent: the committer, woken by the last one, then finds every request it waited for.
pub(crate) struct Receiving(Arc<InFlight>);

impl Receiving {
    pub(crate) fn start(in_flight: &Arc<InFlight>) -> Self {
        in_flight.count.fetch_add(1, Ordering::AcqRel);
        Receiving(in_flight.clone())
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        // Only the last one wakes the committer: a request sent while others are still being
        // received just waits in the channel, with no wake-up (and no context switch) of its
        // own. An unpark while the committer is not parked is one atomic store.
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(committer) = self.0.committer.get()
        {
            committer.unpark();
        }
    }
}

/// No linger waits longer than this, whatever it is configured to: past it, a sync is cheaper
/// than the wait.
pub(crate) const LINGER_CEILING: Duration = Duration::from_secs(1);

/// How long the committer may wait: the recent sync time, never more than a maximum.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Linger {
    max: Duration,
    /// A moving average of the time one batch's write and sync took.
    sync_time: Duration,
}

impl Linger {
    /// Starts at the maximum (at most [`LINGER_CEILING`]), until the first sync says what a
    /// sync costs here.
    pub(crate) fn new(max: Duration) -> Self {
        let max = max.min(LINGER_CEILING);
        Linger {
            max,
            sync_time: max,
        }
    }

    /// The longest the next batch may wait.
    pub(crate) fn bound(&self) -> Duration {
        self.sync_time.min(self.max)
    }

    /// Takes the time one batch's write and sync took into the average (weight 1/8: one slow
    /// sync moves it, a slow disk soon shows).
    pub(crate) fn observe(&mut self, took: Duration) {
        self.sync_time = self.sync_time.saturating_mul(7).saturating_add(took) / 8;
    }
}

/// Adds to `batch` what arrives from `rx` while some message is still being received
/// (`in_flight`), for at most `bound`. Returns once none is (the last one wakes this thread),
/// or the bound has passed. Always called from the same thread, the committer.
pub(crate) fn gather<T>(
    rx: &Receiver<T>,
    batch: &mut Vec<T>,
    in_flight: &InFlight,
    bound: Duration,
) {
    if bound.is_zero() {
        return;
    }
    let Some(until) = Instant::now().checked_add(bound) else {
        return;
    };
    in_flight.committer.get_or_init(std::thread::current);
    loop {
        batch.extend(rx.try_iter());
        let now = Instant::now();
        if in_flight.is_empty() || now >= until {
            return;
        }
        // A wake-up left over from an earlier batch only costs one more look.
        std::thread::park_timeout(until - now);
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
        let in_flight = Arc::new(InFlight::default());
        let (tx, rx) = mpsc::channel();
        let receiving = Receiving::start(&in_flight);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            // As a session does: its request is sent, then its ticket ends.
            tx.send(2).unwrap();
            drop(receiving);
            tx // kept open: the wait must end because nothing is being received
        });
        let mut batch = vec![1];
        let started = Instant::now();
        gather(&rx, &mut batch, &in_flight, Duration::from_secs(30));
        assert_eq!(batch, vec![1, 2]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waited out the bound"
        );
        drop(sender.join().unwrap());
    }

    #[test]
    fn gathering_waits_for_every_message_being_received_not_just_the_next() {
        let in_flight = Arc::new(InFlight::default());
        let (tx, rx) = mpsc::channel();
        let tickets = [Receiving::start(&in_flight), Receiving::start(&in_flight)];
        let sender = std::thread::spawn(move || {
            for (n, ticket) in (2..).zip(tickets) {
                std::thread::sleep(Duration::from_millis(20));
                tx.send(n).unwrap();
                drop(ticket);
            }
            tx
        });
        let mut batch = vec![1];
        let started = Instant::now();
        gather(&rx, &mut batch, &in_flight, Duration::from_secs(30));
        assert_eq!(batch, vec![1, 2, 3], "returned before the last one");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the last one did not wake the committer"
        );
        drop(sender.join().unwrap());
    }

    #[test]
    fn nothing_being_received_means_no_wait() {
        let in_flight = InFlight::default();
        let (tx, rx) = mpsc::channel::<u32>();
        let mut batch = vec![1];
        let started = Instant::now();
        gather(&rx, &mut batch, &in_flight, Duration::from_secs(30));
        assert_eq!(batch, vec![1]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waited out the bound"
        );
        drop(tx);
    }

    #[test]
    fn a_message_that_never_commits_holds_the_batch_only_for_the_bound() {
        let in_flight = Arc::new(InFlight::default());
        let _stuck = Receiving::start(&in_flight);
        let (tx, rx) = mpsc::channel::<u32>();
        let mut batch = vec![1];
        let started = Instant::now();
        gather(&rx, &mut batch, &in_flight, Duration::from_millis(50));
        assert_eq!(batch, vec![1]);
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "did not wait"
        );
        drop(tx);
    }
}
