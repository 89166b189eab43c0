//! The pipeline after commit: one thread owns the queue state machine and the archive store.
//! It schedules each accepted item (initial delay, match attempts, archive or merge), parses
//! it inside `catch_unwind`, applies the archive policy, de-duplicates by the original's
//! Message-ID and sent date, writes the archive, keeps the connector status, and retires
//! spool segments whose items have all settled.
//!
//! An item keeps its journal definition by identity: the service email address it was
//! accepted for, looked up in the current configuration. One whose definition is no longer
//! configured is held (shown with the reason, its spool segment never retired) and taken up
//! again at a start where it is configured; a definition disabled meanwhile still archives
//! what it accepted while enabled (disabling stops new mail, not archiving).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};

use mailjournal_archive::{
    Archival, ArchiveIndex, ArchivedRecipient, ConnectorConfig, ContentStore, NewItem, Progress,
    hash_of,
};
use mailjournal_definition::policy::Journal;
use mailjournal_definition::{ArchiveDecision, Policy};
use mailjournal_queue::{
    Action, Connector, ContentHash, Duration, ItemId, ItemMeta, MatchResult, Queue, QueueParams,
    StateName, Timestamp, Timing,
};
use mailjournal_spool::{Clock, Location, Record, Segments, SpoolReader};

use super::in_flow::InFlow;
use crate::ingest;

/// How long arrivals gather before the pipeline handles them.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// How often, at most, operator retry requests are looked for.
const RETRY_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Due actions handled between two looks at the stop flag: a large backlog is worked through
/// in rounds of this many, so that shutdown waits for one round, not the whole backlog.
const ROUND: usize = 512;

/// How often settled items leave the in-memory queue (the archive store keeps their state).
const PRUNE_EVERY: Duration = Duration::minutes(1);

/// How long an item whose outcome the archive store could not take waits before it is tried
/// again: doubled after each failure in a row, up to [`HEAL_BACKOFF_MAX`].
const HEAL_BACKOFF_MIN: Duration = Duration::seconds(5);

/// The longest wait between two tries of a failing archive store.
const HEAL_BACKOFF_MAX: Duration = Duration::minutes(1);

/// Bytes of committed messages on their way to the pipeline, so that it need not read back
/// what was just written. Bounded: when the pipeline falls behind, further messages go
/// without their bytes (it reads those from the spool) instead of piling up in memory.
#[derive(Debug, Default)]
pub(super) struct Handoff {
    in_flight: AtomicUsize,
}

impl Handoff {
    /// Bytes that may be on their way at once.
    const LIMIT: usize = 32 * 1024 * 1024;

    /// The bytes to send along with a message, if they fit under the limit.
    pub(super) fn offer(&self, data: Option<Vec<u8>>) -> Option<Vec<u8>> {
        let data = data?;
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + data.len() <= Self::LIMIT).then_some(held + data.len())
            })
            .ok()
            .map(|_| data)
    }

    /// Returns bytes taken by [`offer`](Self::offer) to the allowance.
    pub(super) fn release(&self, bytes: usize) {
        self.in_flight.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Messages to the pipeline thread.
pub(super) enum Input {
    /// A committed message, with its bytes when [`Handoff::offer`] let them through.
    Accepted(Box<Record>, Option<Vec<u8>>),
    /// Finish and return.
    Shutdown,
}

/// The pipeline's state.
pub(super) struct Pipeline {
    policy: Arc<Policy>,
    clock: Arc<dyn Clock>,
    index: Box<dyn ArchiveIndex>,
    content: Box<dyn ContentStore>,
    queue: Queue,
    connectors: Vec<Connector>,
    /// Connectors that received messages since the last flush, with the latest time.
    touched: HashMap<usize, Timestamp>,
    /// Items in the queue: their journal definition and where their record is.
    journals: HashMap<ItemId, Placed>,
    /// When settled items were last pruned from the queue.
    pruned_at: Timestamp,
    /// When operator retry requests were last looked for.
    retries_checked_at: Option<Timestamp>,
    /// Reads back what was not handed over (keeping the last log segment open).
    reader: SpoolReader,
    /// The spool's live segments, retired here once all their records are settled.
    segments: Option<Arc<Segments>>,
    /// Records received from each live segment (committed or recovered).
    received: BTreeMap<u64, u64>,
    /// Segments holding a record this pipeline cannot place (its journal definition is gone
    /// from the configuration): never retired, so that a later start can take it up.
    pinned: BTreeSet<u64>,
    /// Set when a store transaction failed: the queue may then be ahead of the store, so no
    /// segment is retired until every item of the failed transactions has been written again
    /// (`unwritten` empty) in a transaction that committed.
    store_failed: bool,
    /// Items written in the open transaction: if it fails, each starts over (see `heal`).
    in_batch_items: Vec<ItemId>,
    /// Items whose index row a failed transaction may have lost: added again at their next
    /// attempt.
    unwritten: HashSet<ItemId>,
    /// How long the next item the store failed for waits before it is tried again.
    heal_backoff: Duration,
    /// Retention, when this pipeline runs it (see [`retention`]).
    retention: Option<retention::RetentionPlan>,
    /// Where the archive store's health is told to other processes.
    health: Option<super::health::HealthFile>,
    /// Set when the store failed during the open transaction.
    store_error_in_batch: bool,
    /// Items waiting for the archive store to work again: the store counts as healthy
    /// only once none is left.
    awaiting_store: HashSet<ItemId>,
    /// Bytes handed over with messages accepted in this round, dropped at its end.
    handed: HashMap<ItemId, Vec<u8>>,
    handoff: Arc<Handoff>,
    /// Set by the server once sessions are done: finish the current round and return.
    stopping: Arc<AtomicBool>,
    /// Told how late this pipeline is, so that sessions slow down while it is behind.
    in_flow: Arc<InFlow>,
    /// True while a store transaction is open (see [`run`](Self::run)).
    in_batch: bool,
    /// The de-duplication key of each item a match attempt has parsed, until it settles.
    match_keys: HashMap<ItemId, MatchKey>,
}

/// What a match attempt needs of an item, kept from its first parse: later attempts (a
/// second apart, or a minute) then neither read the spool nor parse again.
struct MatchKey {
    message_id: Option<Box<str>>,
    sent_date: Option<Box<str>>,
}

impl MatchKey {
    fn of(archival: Archival) -> MatchKey {
        MatchKey {
            message_id: archival.message_id.map(String::into_boxed_str),
            sent_date: archival.sent_date.map(String::into_boxed_str),
        }
    }
}

/// Which journal definition an item arrived for (its position in this process's policy,
/// found by its service address), and where its record is.
#[derive(Debug, Clone, Copy)]
struct Placed {
    journal: usize,
    location: Location,
    /// The message's size, to record the item again should the index lose it.
    size: u64,
    /// The SHA-256 of the message as received, which the spool computed as it wrote it.
    sha256: ContentHash,
}

/// Why an item could not be worked on: what its state's reason says.
#[derive(Debug, thiserror::Error)]
enum ItemError {
    /// Not in the queue.
    #[error("unknown item")]
    Unknown,
    /// Its bytes could not be read back from the spool.
    #[error("spool: {0}")]
    Spool(#[source] std::io::Error),
    /// A bug in a parser, caught.
    #[error("the parser panicked")]
    ParserPanicked,
    /// Matched for archiving, then dropped by the policy when read again.
    #[error("dropped on archive: {0}")]
    DroppedOnArchive(&'static str),
    /// The spooled message gives another archived form than the one recorded.
    #[error("the spooled message no longer gives that archived form")]
    Changed,
    /// The archive store failed.
    #[error(transparent)]
    Archive(#[from] mailjournal_archive::ArchiveError),
}

/// What parsing one item produced; `C` is how its archived form is held.
// One lives per item being worked on, on the stack and moved once: boxing the archival would
// only add an allocation per match attempt.
#[allow(clippy::large_enum_variant)]
enum Parsed<C = Content> {
    Drop {
        reason: &'static str,
        display_sender: Option<String>,
    },
    Keep {
        archival: Archival,
        content: C,
        display_sender: Option<String>,
    },
}

impl<C> Parsed<C> {
    /// The same outcome with its archived form held another way.
    fn map_content<D>(self, hold: impl FnOnce(C) -> D) -> Parsed<D> {
        match self {
            Parsed::Drop {
                reason,
                display_sender,
            } => Parsed::Drop {
                reason,
                display_sender,
            },
            Parsed::Keep {
                archival,
                content,
                display_sender,
            } => Parsed::Keep {
                archival,
                content: hold(content),
                display_sender,
            },
        }
    }
}

/// Where an item's archived form is in the bytes it was parsed from.
enum Span {
    /// This stretch of them: the message as received, or the original inside a report as
    /// it was attached (most items).
    Part(std::ops::Range<usize>),
    /// Bytes of its own: decoded from the report, or with the journal headers taken out.
    /// Empty when the content was not asked for.
    Own(Vec<u8>),
}

/// An item's archived form, held without copying it out of the item's bytes: archiving a
/// 150 MB message needs the message once in memory, not twice.
enum Content {
    /// A stretch of the item's bytes.
    Part {
        bytes: Vec<u8>,
        range: std::ops::Range<usize>,
    },
    /// Bytes of its own.
    Own(Vec<u8>),
}

impl Content {
    fn as_slice(&self) -> &[u8] {
        match self {
            Content::Part { bytes, range } => &bytes[range.clone()],
            Content::Own(bytes) => bytes,
        }
    }
}

impl Pipeline {
    /// A pipeline over an archive: its connectors' last message times restored from the
    /// index, an empty queue (recovery fills it).
    pub(super) fn new(
        policy: Arc<Policy>,
        index: Box<dyn ArchiveIndex>,
        content: Box<dyn ContentStore>,
        reader: SpoolReader,
        clock: Arc<dyn Clock>,
        attempt_interval: Duration,
    ) -> Pipeline {
        let now = clock.now();
        let times: HashMap<String, Option<Timestamp>> = index
            .connector_times()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let connectors = policy
            .journals
            .iter()
            .map(|j| {
                let d = &j.definition;
                let last = times.get(&d.description).copied().flatten();
                Connector::restore(
                    Duration::minutes(u64::from(d.period_of_inactivity_allowed_minutes)),
                    d.disabled,
                    last,
                    now,
                )
            })
            .collect();
        let params = QueueParams {
            attempt_interval,
            ..QueueParams::default()
        };
        Pipeline {
            policy,
            clock,
            index,
            content,
            queue: Queue::new(params),
            connectors,
            touched: HashMap::new(),
            journals: HashMap::new(),
            pruned_at: now,
            retries_checked_at: None,
            reader,
            segments: None,
            received: BTreeMap::new(),
            pinned: BTreeSet::new(),
            store_failed: false,
            in_batch_items: Vec::new(),
            unwritten: HashSet::new(),
            heal_backoff: HEAL_BACKOFF_MIN,
            retention: None,
            health: None,
            store_error_in_batch: false,
            awaiting_store: HashSet::new(),
            handed: HashMap::new(),
            handoff: Arc::default(),
            stopping: Arc::default(),
            in_flow: Arc::default(),
            in_batch: false,
            match_keys: HashMap::new(),
        }
    }

    /// Records the configured definitions in the index, for the service status.
    pub(super) fn record_connectors(&mut self) -> mailjournal_archive::ArchiveResult<()> {
        let connectors: Vec<ConnectorConfig> = self
            .policy
            .journals
            .iter()
            .map(|j| ConnectorConfig {
                description: j.definition.description.clone(),
                service_email_address: j.definition.service_email_address.clone(),
                disabled: j.definition.disabled,
                period_minutes: j.definition.period_of_inactivity_allowed_minutes,
            })
            .collect();
        self.index.set_connectors(&connectors)
    }

    /// The greatest item id the archive holds.
    pub(super) fn newest_item_id(&self) -> mailjournal_archive::ArchiveResult<Option<ItemId>> {
        self.index.newest_item_id()
    }

    /// Tells the archive store's health to other processes through `health`.
    pub(super) fn report_health(&mut self, health: super::health::HealthFile) {
        self.health = Some(health);
    }

    /// Hands over the spool's live segments, to retire once their records are settled.
    pub(super) fn retire_from(&mut self, segments: Arc<Segments>) {
        self.segments = Some(segments);
    }

    /// The flag that makes [`run`](Self::run) stop at the end of its current round of due
    /// actions (items not reached are resumed at the next start).
    pub(super) fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stopping.clone()
    }

    /// What sessions read to know whether archiving is behind.
    pub(super) fn in_flow(&self) -> Arc<InFlow> {
        self.in_flow.clone()
    }

    /// The allowance for bytes handed over with committed messages.
    pub(super) fn handoff(&self) -> Arc<Handoff> {
        self.handoff.clone()
    }

    /// Tells sessions how late archiving is: how long the oldest item that is due has waited
    /// past its time (by the real clock: a long round makes it later as it runs).
    fn publish_lag(&self) {
        let now = self.clock.now();
        let lag = self
            .queue
            .next_deadline()
            .filter(|due| *due <= now)
            .map_or(0, |due| now.since(due).as_millis());
        self.in_flow.observe(std::time::Duration::from_millis(lag));
    }

    /// Runs until shutdown, waking for new items and for the queue's deadlines.
    pub(super) fn run(mut self, input: Receiver<Input>) {
        // Segments whose items all settled before the last stop need no wait for a prune.
        self.retire_settled_segments(self.clock.now());
        loop {
            let now = self.clock.now();
            let wait = self
                .queue
                .next_deadline()
                .into_iter()
                .chain(self.connectors.iter().filter_map(Connector::next_deadline))
                .min()
                .map_or(RETRY_CHECK, |d| {
                    std::time::Duration::from_millis(d.since(now).as_millis().max(1))
                })
                .min(RETRY_CHECK);
            let first = input.recv_timeout(wait);
            if matches!(
                first,
                Ok(Input::Shutdown) | Err(RecvTimeoutError::Disconnected)
            ) {
                return;
            }
            // Under load, let a few milliseconds of arrivals gather: one wake-up and one
            // database transaction for all of them, instead of one per message.
            if first.is_ok() {
                std::thread::sleep(BATCH_WINDOW);
            }
            // Everything that is waiting goes into one database transaction (a long backlog
            // into one per round of due actions: see `run_due`).
            self.in_batch = self.index.begin_batch().is_ok();
            let mut stop = false;
            let mut next = first.ok();
            while let Some(message) = next {
                match message {
                    Input::Accepted(record, data) => self.take(&record, data),
                    Input::Shutdown => stop = true,
                }
                next = input.try_recv().ok();
            }
            self.flush_connectors();
            let now = self.clock.now();
            if self
                .retries_checked_at
                .is_none_or(|at| now.since(at).as_millis() >= RETRY_CHECK.as_millis() as u64)
            {
                self.retries_checked_at = Some(now);
                self.take_retries(now);
            }
            let pruned = self.step(now);
            self.release_handed();
            self.end_batch();
            if pruned {
                self.retire_settled_segments(now);
            }
            self.run_retention_if_due(now);
            if stop {
                return;
            }
        }
    }

    /// Commits the open index transaction, if any.
    fn end_batch(&mut self) {
        let touched = std::mem::take(&mut self.in_batch_items);
        let store_error = std::mem::take(&mut self.store_error_in_batch);
        if !std::mem::take(&mut self.in_batch) {
            return;
        }
        // The batch records items archived: their content must be stored first (a store that
        // writes in the background says here what it could not write). If not, the batch is
        // thrown away and its items start over, as for a failed commit.
        let committed = match self.content.flush() {
            Ok(()) => self.index.end_batch(),
            Err(e) => {
                let _ = self.index.rollback_batch();
                Err(e)
            }
        };
        match committed {
            Ok(()) => {
                if !store_error
                    && self.awaiting_store.is_empty()
                    && let Some(health) = &mut self.health
                {
                    health.ok();
                }
                for id in &touched {
                    self.unwritten.remove(id);
                }
                if !touched.is_empty() {
                    self.heal_backoff = HEAL_BACKOFF_MIN;
                }
                if self.store_failed && self.unwritten.is_empty() {
                    self.store_failed = false;
                    tracing::info!(
                        "archive store works again: every item it lost is written again"
                    );
                }
            }
            Err(e) => {
                // What this transaction said of its items is gone (SQLite rolls a failed
                // commit back): each starts over once the store may work again, and is
                // recorded again then. Nothing is stranded, and no restart is needed.
                self.store_failed = true;
                tracing::error!(error = %e, items = touched.len(), "archive store commit failed: its items start over");
                let now = self.clock.now();
                if let Some(health) = &mut self.health {
                    health.failing(&e.to_string(), now);
                }
                for id in touched {
                    self.unwritten.insert(id);
                    self.awaiting_store.insert(id);
                    self.heal(id, now);
                }
                self.heal_backoff = Duration((self.heal_backoff.0 * 2).min(HEAL_BACKOFF_MAX.0));
            }
        }
    }

    /// An item the archive store failed for starts over after the current backoff (the
    /// failure is the store's, not the item's: no one should have to retry it).
    fn heal(&mut self, id: ItemId, now: Timestamp) {
        // Parsed again when tried again: what the lost transaction recorded of it is gone.
        self.match_keys.remove(&id);
        if self.queue.reopen(id, now, self.heal_backoff).is_ok() {
            tracing::debug!(%id, after_ms = self.heal_backoff.0, "item tried again later");
        } else {
            // Not in the queue (any more): nothing of it waits for the store.
            self.awaiting_store.remove(&id);
        }
    }

    /// Re-queues, in one transaction, every spooled item that is not final in the archive,
    /// as `replay` hands the spool's records over; returns what `replay` returns.
    pub(super) fn recover<T>(&mut self, replay: impl FnOnce(&mut dyn FnMut(Record)) -> T) -> T {
        self.in_batch = self.index.begin_batch().is_ok();
        let replayed = replay(&mut |record| self.accept(&record, false));
        self.end_batch();
        replayed
    }

    /// Takes a message just committed, with its bytes when they were handed over.
    fn take(&mut self, record: &Record, data: Option<Vec<u8>>) {
        if let Some(data) = data
            && let Some(unused) = self.handed.insert(record.id, data)
        {
            // Whatever is not kept goes straight back to the allowance.
            self.handoff.release(unused.len());
        }
        self.accept(record, true);
    }

    /// Drops the bytes handed over this round: items due later are read back when their time
    /// comes.
    fn release_handed(&mut self) {
        for (_, data) in self.handed.drain() {
            self.handoff.release(data.len());
        }
    }

    /// Keeps an item whose journal definition is not configured: visible in the index with
    /// the reason, its spool segment never retired, so that a start with the definition
    /// configured again archives it under that definition (and no other).
    fn hold(&mut self, record: &Record) {
        let envelope = &record.envelope;
        let address = envelope
            .journal
            .clone()
            .or_else(|| envelope.recipients.first().cloned())
            .unwrap_or_default();
        let reason = format!(
            "no journal definition with service address {address} is configured: kept in the spool until one is"
        );
        tracing::error!(id = %record.id, %reason, "spooled item held");
        self.pinned.insert(record.location.segment);
        let sender = envelope.mail_from.as_deref().unwrap_or("<>");
        let item = NewItem {
            id: record.id,
            definition: &address,
            sender,
            recipient: &address,
            received_at: envelope.received_at,
            size: record.size,
            log_offset: record.location.log_offset,
        };
        let recorded = self.index.add_item(&item).and_then(|()| {
            let progress = self.index.progress(record.id)?;
            if progress.is_some_and(|p| p.is_settled()) {
                return Ok(());
            }
            self.index.set_state(
                record.id,
                StateName::Held,
                0,
                Some(&reason),
                None,
                self.clock.now(),
            )
        });
        if let Err(e) = recorded {
            tracing::error!(id = %record.id, error = %e, "cannot record held item");
        }
    }

    /// Takes a committed message into the queue (also used by recovery, `fresh = false`).
    pub(super) fn accept(&mut self, record: &Record, fresh: bool) {
        *self.received.entry(record.location.segment).or_default() += 1;
        let policy = self.policy.clone();
        let Some(journal) = journal_of(&policy, record) else {
            return self.hold(record);
        };
        let index = journal.index;
        let d = &journal.definition;
        let placed = Placed {
            journal: index,
            location: record.location,
            size: record.size,
            sha256: record.sha256,
        };
        let id = record.id;
        let envelope = &record.envelope;
        let sender = envelope.mail_from.clone().unwrap_or_else(|| "<>".into());
        let recipient = journal.service_address.to_string();
        let item = NewItem {
            id,
            definition: &d.description,
            sender: &sender,
            recipient: &recipient,
            received_at: envelope.received_at,
            size: record.size,
            log_offset: record.location.log_offset,
        };
        self.in_batch_items.push(id);
        if let Err(e) = self.index.add_item(&item) {
            tracing::error!(%id, error = %e, "cannot record item");
            self.unwritten.insert(id);
        }
        let meta = ItemMeta {
            id,
            definition: d.description.clone(),
            sender,
            recipients: vec![recipient],
            received_at: envelope.received_at,
            timing: Timing {
                initial_process_delay: Duration::minutes(u64::from(
                    d.initial_process_delay_minutes,
                )),
                delivery_wait_attempts: d.delivery_wait_attempts,
                extended_deduplication: d.extended_deduplication,
            },
        };
        if fresh {
            // Written to the index once per batch (see `flush_connectors`).
            let latest = self.touched.entry(index).or_default();
            *latest = (*latest).max(envelope.received_at);
            for change in self.connectors[index].on_message(envelope.received_at) {
                tracing::info!(connector = %meta.definition, from = change.from.name(), to = change.to.name(), "connector status changed");
            }
        }
        // After a restart, an item resumes where the index says it got: settled ones stay
        // settled, failed ones stay failed until an operator retries them, held ones (their
        // definition configured again) and retried ones start over, and the others get only
        // the match attempts they have left.
        let progress = if fresh {
            None
        } else {
            self.index.progress(id).unwrap_or(None)
        };
        if let Some(progress) = progress.as_ref().filter(|p| p.is_settled()) {
            if let Some(hash) = progress.content
                && !self.content.contains(&hash).unwrap_or(false)
            {
                self.restore_content(id, placed, hash);
            }
            return;
        }
        let now = self.clock.now();
        let queued = match &progress {
            Some(progress) if !matches!(progress.state, StateName::Retry | StateName::Held) => {
                self.queue.resume(meta, progress.attempts, now)
            }
            _ => self.queue.enqueue(meta, now),
        };
        if queued.is_ok() {
            self.journals.insert(id, placed);
            match progress {
                Some(Progress {
                    state: StateName::Failed,
                    reason,
                    ..
                }) => {
                    let _ = self.queue.on_failed(id, reason.unwrap_or_default(), now);
                }
                Some(Progress {
                    state: StateName::Held,
                    ..
                }) => {
                    let _ = self
                        .index
                        .set_state(id, StateName::Waiting, 0, None, None, now);
                    tracing::info!(%id, definition = %d.description, "held item taken up: its journal definition is configured again");
                }
                _ => {}
            }
        }
    }

    /// Records each touched connector's last message time.
    fn flush_connectors(&mut self) {
        for (index, at) in std::mem::take(&mut self.touched) {
            let name = &self.policy.journals[index].definition.description;
            let _ = self.index.touch_connector(name, at);
        }
    }

    /// Failed items an operator asked to retry start over.
    fn take_retries(&mut self, now: Timestamp) {
        for id in self.index.retry_requests().unwrap_or_default() {
            // A failed item starts over; any other that is not settled too (one the store
            // failed for, say, or that waits for its next attempt).
            let restarted = self.queue.retry(id, now).is_ok()
                || self.queue.item(id).is_some_and(|i| !i.state.is_terminal())
                    && self.queue.reopen(id, now, Duration(0)).is_ok();
            self.in_batch_items.push(id);
            if restarted {
                let _ = self
                    .index
                    .set_state(id, StateName::Waiting, 0, None, None, now);
                tracing::info!(%id, "retry requested by an operator");
            } else {
                // Settled meanwhile, or not this process's to work on: keep what it was.
                let state = self
                    .queue
                    .item(id)
                    .map_or(StateName::Waiting, |i| i.state.state_name());
                let _ = self
                    .index
                    .set_state(id, state, self.attempts(id), None, None, now);
            }
        }
    }

    /// Runs every action that is due, and now and then forgets settled items: without that,
    /// every message ever received would stay in memory. True when it forgot.
    pub(super) fn step(&mut self, now: Timestamp) -> bool {
        self.run_due(now);
        let prune = now.since(self.pruned_at) >= PRUNE_EVERY;
        if prune {
            self.prune(now);
        }
        prune
    }

    /// Retires every sealed spool segment whose records have all arrived here and settled:
    /// start-up then no longer reads them. Their settled state is made durable first, since
    /// after retirement nothing else would bring those items back.
    fn retire_settled_segments(&mut self, now: Timestamp) {
        let Some(segments) = self.segments.clone() else {
            return;
        };
        if self.store_failed {
            return;
        }
        let unsettled: HashSet<u64> = self.journals.values().map(|p| p.location.segment).collect();
        let ready: Vec<u64> = segments
            .sealed()
            .into_iter()
            .filter(|(base, records)| {
                self.received.get(base).copied().unwrap_or(0) == *records
                    && !unsettled.contains(base)
                    && !self.pinned.contains(base)
            })
            .map(|(base, _)| base)
            .collect();
        if ready.is_empty() {
            return;
        }
        // The archived content of their items first: after retirement the spool no longer
        // holds a copy to archive again from.
        if let Err(e) = self.content.make_durable() {
            tracing::error!(error = %e, "cannot make archived content durable: spool segments stay live");
            return;
        }
        if let Err(e) = self.index.record_retired(&ready, now) {
            tracing::error!(error = %e, "cannot make the archive store durable: spool segments stay live");
            return;
        }
        for base in ready {
            match segments.retire(base) {
                Ok(()) => {
                    self.received.remove(&base);
                    tracing::info!(
                        segment = base,
                        "spool segment retired: every item in it is settled"
                    );
                }
                Err(e) => {
                    tracing::error!(segment = base, error = %e, "cannot retire spool segment")
                }
            }
        }
    }

    /// Drops settled items (archived, merged, expired, not archived) from the queue and their
    /// spool locations; failed items stay for an operator's retry.
    fn prune(&mut self, now: Timestamp) {
        self.queue.prune(now);
        let queue = &self.queue;
        self.journals.retain(|id, _| queue.item(*id).is_some());
        self.match_keys
            .retain(|id, _| queue.item(*id).is_some_and(|i| !i.state.is_terminal()));
        self.pruned_at = now;
    }

    fn run_due(&mut self, now: Timestamp) {
        for (index, connector) in self.connectors.iter_mut().enumerate() {
            if let Some(change) = connector.poll(now) {
                let name = &self.policy.journals[index].definition.description;
                tracing::warn!(connector = %name, from = change.from.name(), to = change.to.name(), "connector status changed");
            }
        }
        while !self.stopping.load(Ordering::Acquire) {
            self.publish_lag();
            let mut actions: std::collections::VecDeque<Action> =
                self.queue.poll_at_most(now, ROUND).into();
            if actions.is_empty() {
                break;
            }
            while let Some(action) = actions.pop_front() {
                match action {
                    Action::TryMatch(id) => actions.extend(self.try_match(id, now)),
                    Action::Archive(id) => self.archive(id, now),
                    Action::Expire(id) => {
                        self.in_batch_items.push(id);
                        self.awaiting_store.remove(&id);
                        let _ = self.index.set_state(
                            id,
                            StateName::Expired,
                            self.attempts(id),
                            Some("older than 30 days when processed"),
                            None,
                            now,
                        );
                    }
                }
            }
            // Working through a backlog (a flood, or a restart after an outage) can take
            // minutes: commit each round, so that `status` shows the progress and the
            // write-ahead log holds one round rather than the whole backlog.
            if self.in_batch {
                self.end_batch();
                self.in_batch = self.index.begin_batch().is_ok();
            }
        }
    }

    fn attempts(&self, id: ItemId) -> u32 {
        self.queue.item(id).map_or(0, |i| i.attempts)
    }

    /// Records a failure: the queue keeps the item for an operator's retry, the index shows
    /// why.
    fn fail(&mut self, id: ItemId, error: &ItemError, now: Timestamp) {
        self.match_keys.remove(&id);
        let reason = error.to_string();
        if let ItemError::Archive(e) = error {
            // The store's failure, not the item's: shown with its reason while it lasts, and
            // tried again without anyone's retry.
            let shown = format!("{reason} (tried again automatically)");
            let _ = self.index.set_state(
                id,
                StateName::Waiting,
                self.attempts(id),
                Some(&shown),
                None,
                now,
            );
            tracing::error!(%id, error = %e, storage_full = e.is_storage_full(), "archive store failed: the item is tried again later");
            self.store_error_in_batch = true;
            self.awaiting_store.insert(id);
            if let Some(health) = &mut self.health {
                health.failing(&e.to_string(), now);
            }
            self.heal(id, now);
            self.heal_backoff = Duration((self.heal_backoff.0 * 2).min(HEAL_BACKOFF_MAX.0));
            return;
        }
        self.awaiting_store.remove(&id);
        let _ = self.queue.on_failed(id, reason.clone(), now);
        let _ = self.index.set_state(
            id,
            StateName::Failed,
            self.attempts(id),
            Some(&reason),
            None,
            now,
        );
        tracing::error!(%id, %reason, "item failed");
    }

    /// Records an item again that a failed transaction may have lost.
    fn write_again(&mut self, id: ItemId) {
        let (Some(item), Some(placed)) = (self.queue.item(id), self.journals.get(&id)) else {
            return;
        };
        let meta = &item.meta;
        let recipient = meta.recipients.first().map_or("", String::as_str);
        let row = NewItem {
            id,
            definition: &meta.definition,
            sender: &meta.sender,
            recipient,
            received_at: meta.received_at,
            size: placed.size,
            log_offset: placed.location.log_offset,
        };
        if let Err(e) = self.index.add_item(&row) {
            tracing::error!(%id, error = %e, "cannot record item");
        }
    }

    fn try_match(&mut self, id: ItemId, now: Timestamp) -> Option<Action> {
        self.in_batch_items.push(id);
        if self.unwritten.contains(&id) {
            self.write_again(id);
        }
        // The first attempt parses the item; later ones only look its key up again.
        let mut display_sender = None;
        if !self.match_keys.contains_key(&id) {
            match self.parse(id, false) {
                Ok(Parsed::Drop {
                    reason,
                    display_sender,
                }) => {
                    let attempts = self.attempts(id);
                    let _ = self.queue.on_not_archived(id, reason, now);
                    let _ = self.index.set_state(
                        id,
                        StateName::NotArchived,
                        attempts,
                        Some(reason),
                        display_sender.as_deref(),
                        now,
                    );
                    self.awaiting_store.remove(&id);
                    tracing::info!(%id, reason, "not archived");
                    return None;
                }
                Ok(Parsed::Keep {
                    archival,
                    display_sender: sender,
                    ..
                }) => {
                    display_sender = sender;
                    self.match_keys.insert(id, MatchKey::of(archival));
                }
                Err(error) => {
                    self.fail(id, &error, now);
                    return None;
                }
            }
        }
        let attempts = self.attempts(id);
        let found = self.match_keys.get(&id).and_then(|key| {
            let message_id = key.message_id.as_deref()?;
            self.index
                .find_archived(message_id, key.sent_date.as_deref())
                .ok()
                .flatten()
        });
        if let Some(target) = found.filter(|t| *t != id) {
            self.match_keys.remove(&id);
            // A merged item keeps its own archived form too (stored once by hash).
            // Read back as archiving reads it: what failed then fails the item the same way.
            let merged = match self.parse(id, true) {
                Ok(Parsed::Keep {
                    archival, content, ..
                }) => self
                    .store_content(&archival, &content)
                    .and_then(|()| self.index.merge(id, target, &archival, attempts, now))
                    .map_err(ItemError::from),
                Ok(Parsed::Drop { reason, .. }) => Err(ItemError::DroppedOnArchive(reason)),
                Err(e) => Err(e),
            };
            match merged {
                Ok(()) => {
                    let _ = self
                        .queue
                        .on_match_result(id, MatchResult::Found(target), now);
                    self.awaiting_store.remove(&id);
                    tracing::debug!(%id, into = %target, "merged");
                }
                Err(error) => self.fail(id, &error, now),
            }
            return None;
        }
        let next = self
            .queue
            .on_match_result(id, MatchResult::NotFound, now)
            .ok()
            .flatten();
        // Archived right after, in this batch: that write records the attempts (one UPDATE per
        // item fewer), unless this first look found the sender to show.
        let sender = display_sender.as_deref();
        match next {
            Some(_) if sender.is_none() => {}
            Some(_) => {
                let _ = self
                    .index
                    .set_state(id, StateName::Archiving, attempts, None, sender, now);
            }
            None => {
                let _ = self.index.record_attempt(id, attempts, sender, now);
            }
        }
        next
    }

    /// Stores an item's archived form under its hash, readable by any reader before the
    /// index refers to it: at the batch's end, or at once when there is no batch (the index
    /// then commits each write as it comes).
    fn store_content(
        &self,
        archival: &Archival,
        content: &Content,
    ) -> mailjournal_archive::ArchiveResult<()> {
        let Some(hash) = &archival.content else {
            return Ok(());
        };
        self.content.put(hash, content.as_slice())?;
        if !self.in_batch {
            self.content.flush()?;
        }
        Ok(())
    }

    fn archive(&mut self, id: ItemId, now: Timestamp) {
        self.in_batch_items.push(id);
        self.match_keys.remove(&id);
        let attempts = self.attempts(id);
        let result = match self.parse(id, true) {
            Ok(Parsed::Keep {
                archival, content, ..
            }) => self
                .store_content(&archival, &content)
                .and_then(|()| self.index.archive(id, &archival, attempts, now))
                .map_err(ItemError::from),
            Ok(Parsed::Drop { reason, .. }) => Err(ItemError::DroppedOnArchive(reason)),
            Err(e) => Err(e),
        };
        match result {
            Ok(target) => {
                let _ = self.queue.on_archived(id, now);
                self.awaiting_store.remove(&id);
                tracing::debug!(%id, archived_as = %target, "archived");
            }
            Err(error) => self.fail(id, &error, now),
        }
    }

    /// Stores again the archived form of a settled item whose content did not survive a crash
    /// (it was not yet durable, so the item's spool segment is still live and holds it).
    fn restore_content(
        &mut self,
        id: ItemId,
        placed: Placed,
        hash: mailjournal_queue::ContentHash,
    ) {
        let restored = match self.parse_at(id, placed, true) {
            Ok(Parsed::Keep {
                archival, content, ..
            }) if archival.content == Some(hash) => self
                .store_content(&archival, &content)
                .map_err(ItemError::from),
            Ok(_) => Err(ItemError::Changed),
            Err(e) => Err(e),
        };
        match restored {
            Ok(()) => {
                tracing::warn!(%id, "archived content lost in a crash: archived again from the spool")
            }
            Err(error) => {
                tracing::error!(%id, %error, "archived content lost in a crash and not restored")
            }
        }
    }

    /// Reads, parses and classifies an item. A panic in the parser fails the item, never the
    /// server.
    fn parse(&mut self, id: ItemId, with_content: bool) -> Result<Parsed, ItemError> {
        let placed = *self.journals.get(&id).ok_or(ItemError::Unknown)?;
        self.parse_at(id, placed, with_content)
    }

    /// [`parse`](Self::parse) for an item at a known place in the spool.
    fn parse_at(
        &mut self,
        id: ItemId,
        placed: Placed,
        with_content: bool,
    ) -> Result<Parsed, ItemError> {
        // The content is asked for last in an item's life (to archive it): handed bytes are
        // then taken, to hold the archived form without a copy.
        let handed = if with_content {
            self.handed.remove(&id).map(|data| {
                self.handoff.release(data.len());
                std::borrow::Cow::Owned(data)
            })
        } else {
            self.handed
                .get(&id)
                .map(|data| std::borrow::Cow::Borrowed(data.as_slice()))
        };
        // The spool's hash is that of these bytes when they are the ones it hashed (handed
        // over) or were checked against their record's CRC (read from the log); a large
        // message's data file has no such check, so its archived form is hashed again.
        let received_hash =
            (handed.is_some() || placed.location.log_offset.is_some()).then_some(placed.sha256);
        let bytes = match handed {
            Some(bytes) => bytes,
            None => std::borrow::Cow::Owned(
                self.reader
                    .read(id, placed.location)
                    .map_err(ItemError::Spool)?,
            ),
        };
        let journal = &self.policy.journals[placed.journal];
        let policy = &self.policy;
        let parsed = catch_unwind(AssertUnwindSafe(|| {
            let known = Received {
                bytes: &bytes,
                sha256: received_hash,
            };
            classify(policy, journal, known, with_content)
        }))
        .map_err(|_| ItemError::ParserPanicked)?;
        Ok(parsed.map_content(|span| match span {
            Span::Part(range) => Content::Part {
                bytes: bytes.into_owned(),
                range,
            },
            Span::Own(own) => Content::Own(own),
        }))
    }
}

/// The journal definition a record was accepted for, in this process's configuration: by its
/// service address (records from before that was kept name it as their recipient).
fn journal_of<'p>(policy: &'p Policy, record: &Record) -> Option<&'p Journal> {
    let envelope = &record.envelope;
    let address = envelope
        .journal
        .as_deref()
        .or(envelope.recipients.first().map(String::as_str))?;
    policy.journal_for_recipient(address)
}

/// An item's bytes as received, with their SHA-256 when it is known to be theirs.
struct Received<'b> {
    bytes: &'b [u8],
    sha256: Option<ContentHash>,
}

/// Parses and classifies one item ([`ingest`](crate::ingest)); the archived form and its
/// hash only `with_content` (matching needs the key, not the content).
fn classify(
    policy: &Policy,
    journal: &Journal,
    received: Received<'_>,
    with_content: bool,
) -> Parsed<Span> {
    let bytes = received.bytes;
    let ingested = ingest::ingest(policy, journal, bytes);
    let display_sender = ingested.display_sender().map(str::to_owned);
    let item = ingested.item();
    match ingested.decision() {
        ArchiveDecision::Drop(reason) => Parsed::Drop {
            reason: reason.code(),
            display_sender,
        },
        ArchiveDecision::Archive { mailboxes } => {
            let content = if with_content {
                span_in(bytes, ingested.archived_message())
            } else {
                Span::Own(Vec::new())
            };
            let archived = match &content {
                Span::Part(range) => &bytes[range.clone()],
                Span::Own(own) => own.as_slice(),
            };
            let archival = Archival {
                message_id: item.message_id().map(str::to_owned),
                sent_date: ingested.sent_at().map(|t| t.to_string()),
                subject: item.subject().map(str::to_owned),
                sender: item.sender().map(str::to_owned),
                on_behalf_of: item.on_behalf_of().map(str::to_owned),
                format: item.format().as_str().to_owned(),
                // An item archived as received (EML) is not hashed a second time.
                content: with_content.then(|| match (&content, received.sha256) {
                    (Span::Part(range), Some(sha256))
                        if range.start == 0 && range.end == bytes.len() =>
                    {
                        sha256
                    }
                    _ => hash_of(archived),
                }),
                recipients: item
                    .recipients()
                    .iter()
                    .map(|r| ArchivedRecipient {
                        address: r.address.to_string(),
                        field: r.field.as_str().to_owned(),
                        expanded: r.expanded.as_deref().map(str::to_owned),
                        forwarded: r.forwarded.as_deref().map(str::to_owned),
                    })
                    .collect(),
                mailboxes: mailboxes.clone(),
            };
            Parsed::Keep {
                archival,
                content,
                display_sender,
            }
        }
    }
}

/// Where `message` is in `bytes`, when it borrows from them.
fn span_in(bytes: &[u8], message: std::borrow::Cow<'_, [u8]>) -> Span {
    match message {
        std::borrow::Cow::Borrowed(part) => {
            // A borrowed archived form is a subslice of the parsed bytes; its place follows
            // from the addresses (compared as numbers: no pointer is dereferenced).
            let start = (part.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize);
            match bytes.get(start..start.wrapping_add(part.len())) {
                Some(found) if std::ptr::eq(found, part) => Span::Part(start..start + part.len()),
                _ => Span::Own(part.to_vec()),
            }
        }
        std::borrow::Cow::Owned(own) => Span::Own(own),
    }
}

mod retention;
#[cfg(test)]
mod tests;
