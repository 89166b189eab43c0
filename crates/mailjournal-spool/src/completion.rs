//! A commit's completion: the committer thread completes it, a session awaits it on any
//! executor or blocks on it. A one-shot slot with a waker and a condition variable, so that
//! the spool needs no async runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::{CommitError, Committed};

/// What a commit came to.
pub(crate) type Outcome = Result<Committed, CommitError>;

enum State {
    /// Not complete yet: the task to wake, and whether a thread blocks in `wait`.
    Pending {
        waker: Option<Waker>,
        blocked: bool,
    },
    Done(Outcome),
    Taken,
}

struct Slot {
    state: Mutex<State>,
    done: Condvar,
}

impl Slot {
    fn complete(&self, outcome: Outcome) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let State::Pending { waker, blocked } =
            std::mem::replace(&mut *state, State::Done(outcome))
        {
            drop(state);
            // Only a blocked thread needs the condition variable: its wake-up is a system
            // call, and the committer completes every commit of a batch in a row.
            if blocked {
                self.done.notify_all();
            }
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// A message's commit under way (from [`Spool::commit`](crate::Spool::commit)): a future
/// that completes once the message is durable (or the commit failed), on whatever executor
/// polls it; [`wait`](Self::wait) blocks the calling thread instead.
#[must_use = "a message is committed only when its Commit completes"]
pub struct Commit(Arc<Slot>);

impl std::fmt::Debug for Commit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Commit")
    }
}

impl Commit {
    /// Blocks until the commit completes.
    pub fn wait(self) -> Result<Committed, CommitError> {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match std::mem::replace(&mut *state, State::Taken) {
                State::Done(outcome) => return outcome,
                State::Taken => return Err(CommitError::Stopped),
                State::Pending { waker, .. } => {
                    *state = State::Pending {
                        waker,
                        blocked: true,
                    };
                    state = self
                        .0
                        .done
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }
}

impl Future for Commit {
    type Output = Result<Committed, CommitError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            State::Pending { waker, .. } => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            State::Done(_) => match std::mem::replace(&mut *state, State::Taken) {
                State::Done(outcome) => Poll::Ready(outcome),
                _ => Poll::Ready(Err(CommitError::Stopped)),
            },
            State::Taken => Poll::Ready(Err(CommitError::Stopped)),
        }
    }
}

/// The committer's side of a [`Commit`]. Dropped without an outcome (the committer gone),
/// it completes the commit with [`CommitError::Stopped`]: no caller waits forever.
pub(crate) struct Completer(Option<Arc<Slot>>);

impl Completer {
    pub(crate) fn complete(mut self, outcome: Outcome) {
        if let Some(slot) = self.0.take() {
            slot.complete(outcome);
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.complete(Err(CommitError::Stopped));
        }
    }
}

/// A commit and the completer that completes it.
pub(crate) fn pair() -> (Completer, Commit) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State::Pending {
            waker: None,
            blocked: false,
        }),
        done: Condvar::new(),
    });
    (Completer(Some(slot.clone())), Commit(slot))
}

/// A commit that failed before it started.
pub(crate) fn failed(error: CommitError) -> Commit {
    let (completer, commit) = pair();
    completer.complete(Err(error));
    commit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Location;
    use mailjournal_queue::ItemId;

    fn committed() -> Committed {
        Committed {
            id: ItemId(7),
            size: 1,
            location: Location::default(),
        }
    }

    #[test]
    fn a_blocked_waiter_is_woken_by_the_completer() {
        let (completer, commit) = pair();
        let t = std::thread::spawn(move || commit.wait());
        std::thread::sleep(std::time::Duration::from_millis(20));
        completer.complete(Ok(committed()));
        assert_eq!(t.join().unwrap().unwrap(), committed());
    }

    #[test]
    fn a_dropped_completer_fails_the_commit_instead_of_hanging_it() {
        let (completer, commit) = pair();
        drop(completer);
        assert!(matches!(commit.wait(), Err(CommitError::Stopped)));
    }

    #[tokio::test]
    async fn an_awaiting_task_is_woken_on_another_thread() {
        let (completer, commit) = pair();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            completer.complete(Ok(committed()));
        });
        assert_eq!(commit.await.unwrap(), committed());
    }
}
