//! The journal item lifecycle: every accepted item waits the definition's initial process
//! delay, is matched against the archive up to *delivery wait attempts* times, and is then
//! merged into the matching archived item or archived as new, all driven by the host.
//!
//! ```text
//! enqueue ─▶ Waiting ──poll: due──▶ Matching ──NotFound, attempts left──▶ Waiting
//!               │                      │ └─NotFound, last attempt──▶ Archiving ─▶ Archived
//!               │                      └─Found──▶ Merged
//!               └─poll: older than max age──▶ Expired
//! any non-terminal ── host: policy drop ─▶ NotArchived     ── host: failure ─▶ Failed ─retry─▶ Waiting
//! ```
//!
//! The queue never reads a clock: `now` is an argument, [`Queue::poll`] returns the
//! [`Action`]s whose time has come and [`Queue::next_deadline`] says when to call it again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::due::DueSet;
use crate::index::{IdIndex, Slot};
use crate::{Duration, ItemId, StateName, Timestamp};

/// Queue-wide parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueParams {
    /// Time between two match attempts (default one minute).
    pub attempt_interval: Duration,
    /// Items older than this when they would be processed expire (default 30 days).
    pub max_age: Duration,
    /// With extended de-duplication, how long after receipt an item may not be archived as
    /// new (ten minutes, per the specification).
    pub extended_deduplication_hold: Duration,
}

impl Default for QueueParams {
    fn default() -> Self {
        QueueParams {
            attempt_interval: Duration::minutes(1),
            max_age: Duration::days(30),
            extended_deduplication_hold: Duration::minutes(10),
        }
    }
}

/// The per-definition timing options an item is processed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Wait before the first match attempt.
    pub initial_process_delay: Duration,
    /// Match attempts before archiving as new (at least one is made).
    pub delivery_wait_attempts: u32,
    /// Hold the item at least ten minutes for the gateway copy.
    pub extended_deduplication: bool,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            initial_process_delay: Duration(0),
            delivery_wait_attempts: 3,
            extended_deduplication: false,
        }
    }
}

/// What the host knows of an item when it enqueues it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemMeta {
    /// The queue id.
    pub id: ItemId,
    /// The journal definition (its description) the item arrived for.
    pub definition: String,
    /// The SMTP sender of the item (for an envelope item, the report's sender).
    pub sender: String,
    /// The SMTP recipients of the item (for an envelope item, the journal address).
    pub recipients: Vec<String>,
    /// When it was accepted.
    pub received_at: Timestamp,
    /// The definition's timing options.
    pub timing: Timing,
}

/// Where an item is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ItemState {
    /// Waiting until `due` for its next step.
    Waiting {
        /// When the next step is due.
        due: Timestamp,
    },
    /// A match attempt was handed to the host; waiting for its answer.
    Matching,
    /// Archiving as new was handed to the host; waiting for its confirmation.
    Archiving,
    /// Merged into an archived item (terminal).
    Merged {
        /// The archived item it joined.
        into: ItemId,
    },
    /// Archived as a new item (terminal).
    Archived,
    /// Too old when it would have been processed (terminal).
    Expired,
    /// The archive policy dropped it (terminal); the reason is kept.
    NotArchived {
        /// Why.
        reason: String,
    },
    /// Parsing or storage failed; stays until an operator retries it.
    Failed {
        /// Why.
        reason: String,
    },
}

impl ItemState {
    /// The state's name in the shared vocabulary (queue details, the archive, `status`).
    pub fn state_name(&self) -> StateName {
        match self {
            ItemState::Waiting { .. } => StateName::Waiting,
            ItemState::Matching => StateName::Matching,
            ItemState::Archiving => StateName::Archiving,
            ItemState::Merged { .. } => StateName::Merged,
            ItemState::Archived => StateName::Archived,
            ItemState::Expired => StateName::Expired,
            ItemState::NotArchived { .. } => StateName::NotArchived,
            ItemState::Failed { .. } => StateName::Failed,
        }
    }

    /// The state's name in queue details and `status` output.
    pub fn name(&self) -> &'static str {
        self.state_name().as_str()
    }

    /// True when the item will not move again on its own (retrying a failed item is an
    /// operator's decision).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ItemState::Merged { .. }
                | ItemState::Archived
                | ItemState::Expired
                | ItemState::NotArchived { .. }
                | ItemState::Failed { .. }
        )
    }
}

/// What the host must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Look for an archived item with the same match key; answer with
    /// [`Queue::on_match_result`].
    TryMatch(ItemId),
    /// Archive the item as new; confirm with [`Queue::on_archived`].
    Archive(ItemId),
    /// The item expired; the host may report it (no answer expected).
    Expire(ItemId),
}

/// The host's answer to [`Action::TryMatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchResult {
    /// An archived item matched, and the host merged this item's recipients into it.
    Found(ItemId),
    /// No match yet.
    NotFound,
}

/// A call that does not fit the item's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// No such item.
    #[error("unknown item {0}")]
    Unknown(ItemId),
    /// The id is already queued.
    #[error("item {0} is already queued")]
    Duplicate(ItemId),
    /// The answer does not fit the state (e.g. a match result for an item not matching).
    #[error("item {id} is {state}, not {expected}")]
    WrongState {
        /// The item.
        id: ItemId,
        /// Its state's name.
        state: &'static str,
        /// The state the call needs.
        expected: &'static str,
    },
}

/// One item with its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// What the host told at enqueue.
    pub meta: ItemMeta,
    /// Where it is.
    pub state: ItemState,
    /// Match attempts made so far.
    pub attempts: u32,
    /// When the state last changed.
    pub updated_at: Timestamp,
}

/// The whole queue state, for persistence: [`Queue::snapshot`] and [`Queue::restore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Queue parameters.
    pub params: QueueParams,
    /// Every item.
    pub items: Vec<Item>,
}

/// The lifecycle state machine of every item.
///
/// ```
/// use mailjournal_queue::{Action, Duration, ItemId, ItemMeta, MatchResult, Queue, QueueParams, Timestamp, Timing};
/// let mut q = Queue::new(QueueParams::default());
/// let t0 = Timestamp(0);
/// let meta = ItemMeta { id: ItemId(1), definition: "M365".into(), sender: "".into(),
///     recipients: vec!["journaling@journal.contoso.com".into()], received_at: t0, timing: Timing::default() };
/// q.enqueue(meta, t0).unwrap();
/// assert_eq!(q.poll(t0), vec![Action::TryMatch(ItemId(1))]);
/// q.on_match_result(ItemId(1), MatchResult::NotFound, t0).unwrap();
/// assert_eq!(q.next_deadline(), Some(t0 + Duration::minutes(1)));
/// ```
#[derive(Debug, Clone)]
pub struct Queue {
    params: QueueParams,
    items: Items,
    /// Waiting items by due time, with their slot so that `poll` reaches the item without
    /// the id index: `poll` pops only what is due.
    due: DueSet<Due>,
}

/// An entry of the due set: ordered by time, then id (the slot rides along).
type Due = (Timestamp, ItemId, Slot);

impl Queue {
    /// An empty queue.
    pub fn new(params: QueueParams) -> Self {
        Queue {
            params,
            items: Items::default(),
            due: DueSet::default(),
        }
    }

    /// An empty queue with room for `items` items before it grows (e.g. the spool's count at
    /// start-up), so that filling it does not re-copy and re-hash what it holds.
    pub fn with_capacity(params: QueueParams, items: usize) -> Self {
        Queue {
            params,
            items: Items {
                slots: Vec::with_capacity(items),
                free: Vec::new(),
                index: IdIndex::with_capacity(items),
            },
            due: DueSet::with_capacity(items),
        }
    }

    /// The parameters.
    pub fn params(&self) -> QueueParams {
        self.params
    }

    /// Adds an accepted item. Its first step is due after the initial process delay.
    pub fn enqueue(&mut self, meta: ItemMeta, now: Timestamp) -> Result<(), QueueError> {
        let due = meta.received_at + meta.timing.initial_process_delay;
        self.add(meta, 0, due, now)
    }

    /// Adds an item whose processing began before a restart: the host's own record says
    /// `attempts` match attempts were made, so the item gets only the ones left (after the
    /// last, it is archived as new). Its next step is due now, or when its initial delay ends
    /// if that is later. Items known to be settled should not be resumed at all.
    ///
    /// ```
    /// use mailjournal_queue::{Action, ItemId, ItemMeta, MatchResult, Queue, QueueParams, Timestamp, Timing};
    /// let mut q = Queue::new(QueueParams::default());
    /// let t0 = Timestamp(0);
    /// let meta = ItemMeta { id: ItemId(7), definition: "M365".into(), sender: "".into(),
    ///     recipients: vec![], received_at: t0, timing: Timing::default() }; // 3 attempts
    /// let now = Timestamp(600_000);
    /// q.resume(meta, 2, now).unwrap();
    /// assert_eq!(q.poll(now), [Action::TryMatch(ItemId(7))]);
    /// assert_eq!(q.on_match_result(ItemId(7), MatchResult::NotFound, now), Ok(Some(Action::Archive(ItemId(7)))));
    /// ```
    pub fn resume(
        &mut self,
        meta: ItemMeta,
        attempts: u32,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        let due = (meta.received_at + meta.timing.initial_process_delay).max(now);
        let attempts = attempts.min(meta.timing.delivery_wait_attempts.max(1));
        self.add(meta, attempts, due, now)
    }

    /// Adds a waiting item, due at `due`, with `attempts` already made.
    fn add(
        &mut self,
        meta: ItemMeta,
        attempts: u32,
        due: Timestamp,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        if self.items.contains_key(&meta.id) {
            return Err(QueueError::Duplicate(meta.id));
        }
        let id = meta.id;
        let slot = self.items.insert(
            id,
            Item {
                meta,
                state: ItemState::Waiting { due },
                attempts,
                updated_at: now,
            },
        );
        self.due.insert((due, id, slot));
        Ok(())
    }

    /// Returns every action whose time has come, in due order, and moves the items on.
    pub fn poll(&mut self, now: Timestamp) -> Vec<Action> {
        self.poll_at_most(now, usize::MAX)
    }

    /// Like [`poll`](Self::poll), but returns at most `max` actions: the rest stay due for the
    /// next call, so a host can work through a large backlog in rounds (and stop between
    /// them).
    ///
    /// ```
    /// use mailjournal_queue::{ItemId, ItemMeta, Queue, QueueParams, Timestamp, Timing};
    /// let mut q = Queue::new(QueueParams::default());
    /// for id in 0..5 {
    ///     let meta = ItemMeta { id: ItemId(id), definition: "M365".into(), sender: "".into(),
    ///         recipients: vec![], received_at: Timestamp(0), timing: Timing::default() };
    ///     q.enqueue(meta, Timestamp(0)).unwrap();
    /// }
    /// assert_eq!(q.poll_at_most(Timestamp(0), 2).len(), 2);
    /// assert_eq!(q.poll_at_most(Timestamp(0), 10).len(), 3);
    /// assert_eq!(q.next_deadline(), None);
    /// ```
    pub fn poll_at_most(&mut self, now: Timestamp, max: usize) -> Vec<Action> {
        let mut actions = Vec::new();
        while actions.len() < max
            && let Some((due, id, slot)) = self.due.pop_first_if(|&(due, ..)| due <= now)
        {
            let params = self.params;
            // The due set is kept exact (every change of a waiting item removes its entry),
            // so the slot holds this item; the checks only guard that invariant.
            let Some(item) = self.items.at_mut(slot) else {
                continue;
            };
            if item.meta.id != id || item.state != (ItemState::Waiting { due }) {
                continue;
            }
            let received = item.meta.received_at;
            if now.since(received) > params.max_age {
                item.state = ItemState::Expired;
                item.updated_at = now;
                actions.push(Action::Expire(id));
                continue;
            }
            let timing = item.meta.timing;
            let max_attempts = timing.delivery_wait_attempts.max(1);
            if item.attempts >= max_attempts {
                // Only reached after a restore of an item whose last answer was lost.
                item.state = ItemState::Archiving;
                item.updated_at = now;
                actions.push(Action::Archive(id));
                continue;
            }
            // With extended de-duplication the last attempt, after which the item is
            // archived as new, waits until the gateway copy has had its ten minutes.
            let hold_until = received + params.extended_deduplication_hold;
            if timing.extended_deduplication
                && item.attempts + 1 == max_attempts
                && now < hold_until
            {
                item.state = ItemState::Waiting { due: hold_until };
                self.due.insert((hold_until, id, slot));
                continue;
            }
            item.attempts += 1;
            item.state = ItemState::Matching;
            item.updated_at = now;
            actions.push(Action::TryMatch(id));
        }
        actions
    }

    /// The host's answer to a [`Action::TryMatch`]. `Found` ends the item as merged; a miss
    /// schedules the next attempt, or, after the last one, returns [`Action::Archive`].
    pub fn on_match_result(
        &mut self,
        id: ItemId,
        result: MatchResult,
        now: Timestamp,
    ) -> Result<Option<Action>, QueueError> {
        let interval = self.params.attempt_interval;
        let (slot, item) = self.expect_state(id, "matching", |s| *s == ItemState::Matching)?;
        item.updated_at = now;
        match result {
            MatchResult::Found(into) => {
                item.state = ItemState::Merged { into };
                Ok(None)
            }
            MatchResult::NotFound
                if item.attempts < item.meta.timing.delivery_wait_attempts.max(1) =>
            {
                let due = now + interval;
                item.state = ItemState::Waiting { due };
                self.due.insert((due, id, slot));
                Ok(None)
            }
            MatchResult::NotFound => {
                item.state = ItemState::Archiving;
                Ok(Some(Action::Archive(id)))
            }
        }
    }

    /// The host archived the item as new.
    pub fn on_archived(&mut self, id: ItemId, now: Timestamp) -> Result<(), QueueError> {
        let (_, item) = self.expect_state(id, "archiving", |s| *s == ItemState::Archiving)?;
        item.state = ItemState::Archived;
        item.updated_at = now;
        Ok(())
    }

    /// The archive policy dropped the item; the reason stays visible.
    pub fn on_not_archived(
        &mut self,
        id: ItemId,
        reason: impl Into<String>,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        self.settle(
            id,
            ItemState::NotArchived {
                reason: reason.into(),
            },
            now,
        )
    }

    /// Parsing or storage failed; the item stays `failed` until [`retry`](Self::retry).
    pub fn on_failed(
        &mut self,
        id: ItemId,
        reason: impl Into<String>,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        self.settle(
            id,
            ItemState::Failed {
                reason: reason.into(),
            },
            now,
        )
    }

    /// Moves a non-terminal item to a host-decided resting state, unscheduling it.
    fn settle(&mut self, id: ItemId, state: ItemState, now: Timestamp) -> Result<(), QueueError> {
        let (slot, item) = self.expect_state(id, "not terminal", |s| !s.is_terminal())?;
        let scheduled = match item.state {
            ItemState::Waiting { due } => Some(due),
            _ => None,
        };
        item.state = state;
        item.updated_at = now;
        if let Some(due) = scheduled {
            // Keeps `next_deadline` exact.
            self.due.remove(&(due, id, slot));
        }
        Ok(())
    }

    /// An operator retries a failed item: it starts over, due now, with its attempts reset.
    pub fn retry(&mut self, id: ItemId, now: Timestamp) -> Result<(), QueueError> {
        let (slot, item) =
            self.expect_state(id, "failed", |s| matches!(s, ItemState::Failed { .. }))?;
        item.state = ItemState::Waiting { due: now };
        item.attempts = 0;
        item.updated_at = now;
        self.due.insert((now, id, slot));
        Ok(())
    }

    /// The host could not record what became of an item (its archive store failed, or a
    /// transaction holding the outcome was lost): whatever its state, the item starts over,
    /// due `delay` after `now`, its attempts reset. Also how an operator's retry restarts an item
    /// that is not failed.
    ///
    /// ```
    /// use mailjournal_queue::*;
    /// let mut q = Queue::new(QueueParams::default());
    /// let timing = Timing { initial_process_delay: Duration(0), delivery_wait_attempts: 1, extended_deduplication: false };
    /// let meta = ItemMeta { id: ItemId(1), definition: "d".into(), sender: "<>".into(), recipients: vec![], received_at: Timestamp(0), timing };
    /// q.enqueue(meta, Timestamp(0)).unwrap();
    /// assert_eq!(q.poll(Timestamp(0)), [Action::TryMatch(ItemId(1))]);
    /// q.on_match_result(ItemId(1), MatchResult::NotFound, Timestamp(0)).unwrap();
    /// q.on_archived(ItemId(1), Timestamp(0)).unwrap();
    /// // The transaction that recorded the archiving was lost:
    /// q.reopen(ItemId(1), Timestamp(1_000), Duration::seconds(4)).unwrap();
    /// assert_eq!(q.item(ItemId(1)).unwrap().attempts, 0);
    /// assert_eq!(q.poll(Timestamp(5_000)), [Action::TryMatch(ItemId(1))]);
    /// ```
    pub fn reopen(
        &mut self,
        id: ItemId,
        now: Timestamp,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let due = now + delay;
        let (slot, item) = self.expect_state(id, "known", |_| true)?;
        let scheduled = match item.state {
            ItemState::Waiting { due } => Some(due),
            _ => None,
        };
        item.state = ItemState::Waiting { due };
        item.attempts = 0;
        item.updated_at = now;
        if let Some(old) = scheduled {
            self.due.remove(&(old, id, slot));
        }
        self.due.insert((due, id, slot));
        Ok(())
    }

    /// When [`poll`](Self::poll) next has something to do.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.due.first().map(|(due, _, _)| due)
    }

    /// One item.
    pub fn item(&self, id: ItemId) -> Option<&Item> {
        self.items.get(&id)
    }

    /// Number of items held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when no item is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Forgets terminal items last changed before `before` (they live on in the archive).
    pub fn prune(&mut self, before: Timestamp) -> usize {
        let old = self.items.len();
        self.items.retain(|item| {
            !(item.state.is_terminal()
                && !matches!(item.state, ItemState::Failed { .. })
                && item.updated_at < before)
        });
        old - self.items.len()
    }

    /// The whole state, for persistence.
    pub fn snapshot(&self) -> Snapshot {
        let mut items: Vec<Item> = self.items.values().cloned().collect();
        items.sort_by_key(|i| i.meta.id);
        Snapshot {
            params: self.params,
            items,
        }
    }

    /// Rebuilds a queue from a snapshot. Items whose action was handed to the host but not
    /// answered (`matching`, `archiving`) are due again at `now`: the host may have crashed
    /// before acting, so the action is repeated (hosts make matching and archiving idempotent).
    pub fn restore(snapshot: Snapshot, now: Timestamp) -> Self {
        let mut queue = Queue::with_capacity(snapshot.params, snapshot.items.len());
        for mut item in snapshot.items {
            let due = match item.state {
                ItemState::Waiting { due } => Some(due),
                ItemState::Matching => {
                    // The unanswered attempt is made again, not counted twice.
                    item.attempts = item.attempts.saturating_sub(1);
                    item.state = ItemState::Waiting { due: now };
                    Some(now)
                }
                ItemState::Archiving => {
                    item.state = ItemState::Waiting { due: now };
                    Some(now)
                }
                _ => None,
            };
            let id = item.meta.id;
            let slot = queue.items.insert(id, item);
            if let Some(due) = due {
                queue.due.insert((due, id, slot));
            }
        }
        queue
    }

    /// Queue details as an operator checks them after setup: counts per state, the oldest
    /// pending item's age, and the newest `limit` items (0: all), newest first.
    pub fn details(&self, now: Timestamp, limit: usize) -> QueueDetails {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut oldest_pending: Option<Timestamp> = None;
        for item in self.items.values() {
            *counts.entry(item.state.name().to_owned()).or_default() += 1;
            if !item.state.is_terminal() {
                let r = item.meta.received_at;
                oldest_pending = Some(oldest_pending.map_or(r, |o| o.min(r)));
            }
        }
        let mut items: Vec<&Item> = self.items.values().collect();
        items.sort_by(|a, b| {
            b.meta
                .received_at
                .cmp(&a.meta.received_at)
                .then(b.meta.id.cmp(&a.meta.id))
        });
        if limit > 0 {
            items.truncate(limit);
        }
        QueueDetails {
            counts,
            oldest_pending_age: oldest_pending.map(|o| now.since(o)),
            items: items.into_iter().cloned().collect(),
        }
    }

    fn expect_state(
        &mut self,
        id: ItemId,
        expected: &'static str,
        ok: impl Fn(&ItemState) -> bool,
    ) -> Result<(Slot, &mut Item), QueueError> {
        let slot = self.items.slot(&id).ok_or(QueueError::Unknown(id))?;
        let item = self.items.at_mut(slot).ok_or(QueueError::Unknown(id))?;
        if !ok(&item.state) {
            return Err(QueueError::WrongState {
                id,
                state: item.state.name(),
                expected,
            });
        }
        Ok((slot, item))
    }
}

/// The items, kept in a slab: their bodies sit in one vector in arrival order (the order in
/// which `poll` and the host's answers mostly visit them, so memory is walked, not jumped
/// about), and the id index maps ids to slots (see [`IdIndex`]).
#[derive(Debug, Clone, Default)]
struct Items {
    slots: Vec<Option<Item>>,
    free: Vec<Slot>,
    index: IdIndex,
}

impl Items {
    fn contains_key(&self, id: &ItemId) -> bool {
        self.index.get(*id).is_some()
    }

    fn slot(&mut self, id: &ItemId) -> Option<Slot> {
        self.index.find(*id)
    }

    fn at_mut(&mut self, slot: Slot) -> Option<&mut Item> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Stores the item (replacing any of the same id) and returns its slot.
    fn insert(&mut self, id: ItemId, item: Item) -> Slot {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(item);
                slot
            }
            None => {
                self.slots.push(Some(item));
                (self.slots.len() - 1) as u32
            }
        };
        if let Some(old) = self.index.insert(id, slot) {
            self.slots[old as usize] = None;
            self.free.push(old);
        }
        slot
    }

    fn get(&self, id: &ItemId) -> Option<&Item> {
        self.slots.get(self.index.get(*id)? as usize)?.as_ref()
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    fn values(&self) -> impl Iterator<Item = &Item> {
        self.slots.iter().flatten()
    }

    fn retain(&mut self, mut keep: impl FnMut(&Item) -> bool) {
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            if entry.as_ref().is_some_and(|item| !keep(item)) {
                if let Some(item) = entry.take() {
                    self.index.remove(item.meta.id);
                }
                self.free.push(slot as Slot);
            }
        }
    }
}

/// What [`Queue::details`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDetails {
    /// Items per state name.
    pub counts: BTreeMap<String, usize>,
    /// Age of the oldest item not yet in a terminal state.
    pub oldest_pending_age: Option<Duration>,
    /// The items listed, newest first.
    pub items: Vec<Item>,
}
