//! Alarms a thread raises when it can no longer do its work: the spool's when it cannot make
//! messages durable, an engine's when its pipeline dies. Waited for as a future on any
//! executor, or polled with [`Alarm::is_raised`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
struct Inner {
    raised: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
}

/// An alarm: once raised, it stays raised. Clones share it.
///
/// ```
/// let alarm = mailjournal_spool::Alarm::default();
/// let guard = alarm.guard();
/// std::thread::spawn(move || {
///     let _guard = guard; // this thread ends without disarming it: the alarm goes off
/// })
/// .join()
/// .unwrap();
/// assert!(alarm.is_raised());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Alarm(Arc<Inner>);

impl Alarm {
    /// Raises it, waking every waiter.
    pub fn raise(&self) {
        self.0.raised.store(true, Ordering::SeqCst);
        let waiters = std::mem::take(
            &mut *self
                .0
                .waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for waker in waiters {
            waker.wake();
        }
    }

    /// True once raised.
    pub fn is_raised(&self) -> bool {
        self.0.raised.load(Ordering::SeqCst)
    }

    /// Completes once the alarm is raised.
    pub fn raised(&self) -> Raised<'_> {
        Raised(self)
    }

    /// A guard that raises this alarm when dropped armed: give it to a thread that must not
    /// end unnoticed (a panic's unwinding included), and [`disarm`](AlarmGuard::disarm) it
    /// where the thread ends as it should.
    pub fn guard(&self) -> AlarmGuard {
        AlarmGuard(Some(self.clone()))
    }
}

/// The future of [`Alarm::raised`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Raised<'a>(&'a Alarm);

impl Future for Raised<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.is_raised() {
            return Poll::Ready(());
        }
        let mut waiters = self
            .0
            .0
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Checked again under the lock: `raise` sets the flag before it takes the waiters.
        if self.0.is_raised() {
            return Poll::Ready(());
        }
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Raises its alarm when dropped armed (see [`Alarm::guard`]).
#[derive(Debug)]
pub struct AlarmGuard(Option<Alarm>);

impl AlarmGuard {
    /// The thread ended as it should: no alarm.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AlarmGuard {
    fn drop(&mut self) {
        if let Some(alarm) = self.0.take() {
            alarm.raise();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_thread_that_panics_raises_its_alarm_and_one_that_ends_well_does_not() {
        let alarm = Alarm::default();
        let armed = alarm.guard();
        let ended = std::thread::spawn(move || {
            let _armed = armed;
            panic!("a bug outside the parser's guard");
        })
        .join();
        assert!(ended.is_err());
        tokio::time::timeout(std::time::Duration::from_secs(5), alarm.raised())
            .await
            .expect("the alarm was raised");

        let quiet = Alarm::default();
        let armed = quiet.guard();
        std::thread::spawn(move || armed.disarm()).join().unwrap();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(200), quiet.raised()).await;
        assert!(waited.is_err(), "no alarm for a thread that ended well");
        assert!(!quiet.is_raised());
    }

    #[tokio::test]
    async fn a_waiter_that_started_before_the_alarm_is_woken() {
        let alarm = Alarm::default();
        let raiser = alarm.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            raiser.raise();
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), alarm.raised())
            .await
            .expect("woken");
    }
}
