//! The pipeline after commit: one thread owns the queue state machine and the archive store.
//! It schedules each accepted item (initial delay, match attempts, archive or merge), parses
//! it inside `catch_unwind`, applies the archive policy, de-duplicates by the original's
//! Message-ID and sent date, writes the archive, and keeps the connector status.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};

use mailjournal::definition::policy::Journal;
use mailjournal::definition::{ArchiveDecision, Policy};
use mailjournal::ingest;
use mailjournal::queue::{
    Action, Connector, Duration, ItemId, ItemMeta, MatchResult, Queue, QueueParams, Timestamp,
    Timing,
};
use sha2::{Digest, Sha256};

use super::in_flow::InFlow;
use super::spool::{self, Record, Segments};
use crate::clock;
use crate::store::{Archival, ArchiveStore, ArchivedRecipient, NewItem, Progress};

/// How long arrivals gather before the pipeline handles them.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// How often, at most, operator retry requests are looked for.
const RETRY_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Due actions handled between two looks at the stop flag: a large backlog is worked through
/// in rounds of this many, so that shutdown waits for one round, not the whole backlog.
const ROUND: usize = 512;

/// How often settled items leave the in-memory queue (the archive store keeps their state).
const PRUNE_EVERY: Duration = Duration::minutes(1);

/// The pipeline thread's nice value. Archiving can wait a few milliseconds, acceptance cannot:
/// when both want the CPU, the sessions and the committer (the path to each `250`) get most
/// of it. Not the lowest value, though: at nice 10 the scheduler still gives the pipeline
/// about a tenth of a contended CPU, more than the ~13 µs per message it needs against the
/// sessions' and committer's ~125 µs, so under sustained overload it keeps up instead of
/// letting its backlog (and the queue's memory) grow without end.
const PIPELINE_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`PIPELINE_NICE`], where the system
/// allows it.
pub(crate) fn run_in_background() {
    // On Linux a thread's nice value is its own (elsewhere this call would renice the whole
    // process, so it is Linux only).
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, PIPELINE_NICE) {
        tracing::warn!(error = %e, "cannot lower the pipeline thread's priority");
    }
}

/// Bytes of committed messages on their way to the pipeline, so that it need not read back
/// what was just written. Bounded: when the pipeline falls behind, further messages go
/// without their bytes (it reads those from the spool) instead of piling up in memory.
#[derive(Debug, Default)]
pub(crate) struct Handoff {
    in_flight: AtomicUsize,
}

impl Handoff {
    /// Bytes that may be on their way at once.
    const LIMIT: usize = 32 * 1024 * 1024;

    /// The bytes to send along with a message, if they fit under the limit.
    pub(crate) fn offer(&self, data: Option<Vec<u8>>) -> Option<Vec<u8>> {
        let data = data?;
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + data.len() <= Self::LIMIT).then_some(held + data.len())
            })
            .ok()
            .map(|_| data)
    }

    /// Returns bytes taken by [`offer`](Self::offer) to the allowance.
    pub(crate) fn release(&self, bytes: usize) {
        self.in_flight.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Messages to the pipeline thread.
pub(crate) enum Input {
    /// A committed message, with its bytes when [`Handoff::offer`] let them through.
    Accepted(Box<Record>, Option<Vec<u8>>),
    /// Finish and return.
    Shutdown,
}

/// The pipeline's state.
pub(crate) struct Pipeline {
    policy: Arc<Policy>,
    data_dir: PathBuf,
    store: Box<dyn ArchiveStore>,
    queue: Queue,
    connectors: Vec<Connector>,
    /// Connectors that received messages since the last flush, with the latest time.
    touched: HashMap<usize, u64>,
    /// Items in the queue: their journal definition and where their record is.
    journals: HashMap<ItemId, Location>,
    /// When settled items were last pruned from the queue.
    pruned_at: Timestamp,
    /// When operator retry requests were last looked for.
    retries_checked_at: Option<Timestamp>,
    /// The last log segment read, kept open: inline messages not handed over are read back
    /// from the segment that holds them.
    log: Option<(u64, std::fs::File)>,
    /// The spool's live segments, retired here once all their records are settled.
    segments: Option<Arc<Segments>>,
    /// Records received from each live segment (committed or recovered).
    received: BTreeMap<u64, u64>,
    /// Segments holding a record this pipeline cannot place (its journal definition is gone
    /// from the configuration): never retired, so that a later start can take it.
    pinned: BTreeSet<u64>,
    /// Set when a store transaction failed: the queue may then be ahead of the store, and
    /// only the live segments let a restart catch up, so none is retired until then.
    store_failed: bool,
    /// Bytes handed over with messages accepted in this round, dropped at its end.
    handed: HashMap<ItemId, Vec<u8>>,
    handoff: Arc<Handoff>,
    /// Set by the server once sessions are done: finish the current round and return.
    stopping: Arc<AtomicBool>,
    /// Told how late this pipeline is, so that sessions slow down while it is behind.
    in_flow: Arc<InFlow>,
    /// True while a store transaction is open (see [`run`](Self::run)).
    in_batch: bool,
}

/// Where an item's record is, and which journal definition it arrived for.
#[derive(Debug, Clone, Copy)]
struct Location {
    journal: usize,
    segment: u64,
    /// The record's offset in the log, when the bytes are inline in it.
    log_offset: Option<u64>,
}

/// What parsing one item produced; `C` is how its archived form is held.
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
    pub(crate) fn new(
        policy: Arc<Policy>,
        data_dir: PathBuf,
        store: Box<dyn ArchiveStore>,
        attempt_interval: Duration,
        handoff: Arc<Handoff>,
    ) -> Pipeline {
        let now = clock::now();
        let times: HashMap<String, Option<u64>> = store
            .connector_times()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let connectors = policy
            .journals
            .iter()
            .map(|j| {
                let d = &j.definition;
                let last = times.get(&d.description).copied().flatten().map(Timestamp);
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
            data_dir,
            store,
            queue: Queue::new(params),
            connectors,
            touched: HashMap::new(),
            journals: HashMap::new(),
            pruned_at: now,
            retries_checked_at: None,
            log: None,
            segments: None,
            received: BTreeMap::new(),
            pinned: BTreeSet::new(),
            store_failed: false,
            handed: HashMap::new(),
            handoff,
            stopping: Arc::default(),
            in_flow: Arc::default(),
            in_batch: false,
        }
    }

    /// Hands over the spool's live segments, to retire once their records are settled.
    pub(crate) fn retire_from(&mut self, segments: Arc<Segments>) {
        self.segments = Some(segments);
    }

    /// The flag that makes [`run`](Self::run) stop at the end of its current round of due
    /// actions (items not reached are resumed at the next start).
    pub(crate) fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stopping.clone()
    }

    /// What sessions read to know whether archiving is behind.
    pub(crate) fn in_flow(&self) -> Arc<InFlow> {
        self.in_flow.clone()
    }

    /// Tells sessions how late archiving is: how long the oldest item that is due has waited
    /// past its time (by the real clock: a long round makes it later as it runs).
    fn publish_lag(&self) {
        let now = clock::now();
        let lag = self
            .queue
            .next_deadline()
            .filter(|due| *due <= now)
            .map_or(0, |due| now.since(due).as_millis());
        self.in_flow.observe(std::time::Duration::from_millis(lag));
    }

    /// Runs until shutdown, waking for new items and for the queue's deadlines.
    pub(crate) fn run(mut self, input: Receiver<Input>) {
        // Segments whose items all settled before the last stop need no wait for a prune.
        self.retire_settled_segments(clock::now());
        loop {
            let now = clock::now();
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
            self.in_batch = self.store.begin_batch().is_ok();
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
            let now = clock::now();
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
            if stop {
                return;
            }
        }
    }

    /// Commits the open store transaction, if any.
    fn end_batch(&mut self) {
        if std::mem::take(&mut self.in_batch)
            && let Err(e) = self.store.end_batch()
        {
            self.store_failed = true;
            tracing::error!(error = %e, "archive store commit failed");
        }
    }

    /// Re-queues, in one transaction, every spooled item that is not final in the archive,
    /// as `replay` hands the spool's records over; returns what `replay` returns.
    pub(crate) fn recover<T>(&mut self, replay: impl FnOnce(&mut dyn FnMut(Record)) -> T) -> T {
        let batch = self.store.begin_batch();
        let replayed = replay(&mut |record| self.accept(&record, false));
        if batch.is_ok()
            && let Err(e) = self.store.end_batch()
        {
            self.store_failed = true;
            tracing::error!(error = %e, "archive store commit failed during recovery");
        }
        replayed
    }

    /// Takes a message just committed, with its bytes when they were handed over.
    fn take(&mut self, record: &Record, data: Option<Vec<u8>>) {
        if let Some(data) = data {
            // Whatever is not kept goes straight back to the allowance.
            let replaced = match spool::parse_id(&record.id) {
                Some(id) => self.handed.insert(ItemId(id), data),
                None => Some(data),
            };
            if let Some(unused) = replaced {
                self.handoff.release(unused.len());
            }
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

    /// Takes a committed message into the queue (also used by recovery, `fresh = false`).
    pub(crate) fn accept(&mut self, record: &Record, fresh: bool) {
        *self.received.entry(record.segment).or_default() += 1;
        let known = record
            .journals
            .first()
            .and_then(|&index| Some((index, self.policy.journals.get(index)?)))
            .zip(spool::parse_id(&record.id));
        let Some(((index, journal), id)) = known else {
            tracing::error!(id = %record.id, "spooled item for no configured journal definition: left in the spool");
            self.pinned.insert(record.segment);
            return;
        };
        let d = &journal.definition;
        let location = Location {
            journal: index,
            segment: record.segment,
            log_offset: record.log_offset,
        };
        let sender = record.mail_from.clone().unwrap_or_else(|| "<>".into());
        let recipient = journal.service_address.to_string();
        let item = NewItem {
            id: &record.id,
            definition: &d.description,
            sender: &sender,
            recipient: &recipient,
            received_at: record.received_at,
            size: record.size,
            log_offset: record.log_offset,
        };
        if let Err(e) = self.store.add_item(&item) {
            tracing::error!(id = %record.id, error = %e, "cannot record item");
        }
        if fresh {
            // Written to the store once per batch (see `flush_connectors`).
            let latest = self.touched.entry(index).or_default();
            *latest = (*latest).max(record.received_at);
            for change in self.connectors[index].on_message(Timestamp(record.received_at)) {
                tracing::info!(connector = %d.description, from = change.from.name(), to = change.to.name(), "connector status changed");
            }
        }
        // After a restart, an item resumes where the store says it got: settled ones stay
        // settled, failed ones stay failed until an operator retries them, and the others get
        // only the match attempts they have left.
        let progress = if fresh {
            None
        } else {
            self.store.progress(&record.id).unwrap_or(None)
        };
        if let Some(progress) = progress.as_ref().filter(|p| p.is_settled()) {
            if let Some(sha256) = progress.content_sha256.as_deref().filter(|s| !s.is_empty())
                && !self.store.has_content(sha256)
            {
                self.restore_content(ItemId(id), location, sha256);
            }
            return;
        }
        let meta = ItemMeta {
            id: ItemId(id),
            definition: d.description.clone(),
            sender,
            recipients: vec![recipient],
            received_at: Timestamp(record.received_at),
            timing: Timing {
                initial_process_delay: Duration::minutes(u64::from(
                    d.initial_process_delay_minutes,
                )),
                delivery_wait_attempts: d.delivery_wait_attempts,
                extended_deduplication: d.extended_deduplication,
            },
        };
        let now = clock::now();
        let queued = match &progress {
            // An operator's retry request starts the item over.
            Some(progress) if progress.state != "retry" => {
                self.queue.resume(meta, progress.attempts, now)
            }
            _ => self.queue.enqueue(meta, now),
        };
        if queued.is_ok() {
            self.journals.insert(ItemId(id), location);
            if let Some(Progress { state, reason, .. }) = progress
                && state == "failed"
            {
                let _ = self
                    .queue
                    .on_failed(ItemId(id), reason.unwrap_or_default(), now);
            }
        }
    }

    /// Records each touched connector's last message time.
    fn flush_connectors(&mut self) {
        for (index, at) in std::mem::take(&mut self.touched) {
            let name = &self.policy.journals[index].definition.description;
            let _ = self.store.touch_connector(name, at);
        }
    }

    /// Failed items an operator asked to retry start over.
    fn take_retries(&mut self, now: Timestamp) {
        for name in self.store.retry_requests().unwrap_or_default() {
            let Some(id) = spool::parse_id(&name).map(ItemId) else {
                continue;
            };
            if self.queue.retry(id, now).is_ok() {
                let _ = self.store.set_state(&name, "waiting", 0, None, None, now.0);
                tracing::info!(id = %name, "retry requested by an operator");
            }
        }
    }

    /// Runs every action that is due, and now and then forgets settled items: without that,
    /// every message ever received would stay in memory. True when it forgot.
    pub(crate) fn step(&mut self, now: Timestamp) -> bool {
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
        let unsettled: HashSet<u64> = self.journals.values().map(|l| l.segment).collect();
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
        if let Err(e) = self.store.make_content_durable() {
            tracing::error!(error = %e, "cannot make archived content durable: spool segments stay live");
            return;
        }
        if let Err(e) = self.store.record_retired(&ready, now.0) {
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
                        let _ = self.store.set_state(
                            &spool::format_id(id.0),
                            "expired",
                            self.attempts(id),
                            Some("older than 30 days when processed"),
                            None,
                            now.0,
                        );
                    }
                }
            }
            // Working through a backlog (a flood, or a restart after an outage) can take
            // minutes: commit each round, so that `status` shows the progress and the
            // write-ahead log holds one round rather than the whole backlog.
            if self.in_batch {
                self.end_batch();
                self.in_batch = self.store.begin_batch().is_ok();
            }
        }
    }

    fn attempts(&self, id: ItemId) -> u32 {
        self.queue.item(id).map_or(0, |i| i.attempts)
    }

    fn try_match(&mut self, id: ItemId, now: Timestamp) -> Option<Action> {
        let name = spool::format_id(id.0);
        let parsed = match self.parse(id, false) {
            Ok(parsed) => parsed,
            Err(reason) => {
                let _ = self.queue.on_failed(id, reason.clone(), now);
                let _ = self.store.set_state(
                    &name,
                    "failed",
                    self.attempts(id),
                    Some(&reason),
                    None,
                    now.0,
                );
                tracing::error!(id = %name, %reason, "item failed");
                return None;
            }
        };
        let attempts = self.attempts(id);
        match parsed {
            Parsed::Drop {
                reason,
                display_sender,
            } => {
                let _ = self.queue.on_not_archived(id, reason, now);
                let _ = self.store.set_state(
                    &name,
                    "not_archived",
                    attempts,
                    Some(reason),
                    display_sender.as_deref(),
                    now.0,
                );
                tracing::info!(id = %name, reason, "not archived");
                None
            }
            Parsed::Keep {
                archival,
                display_sender,
                ..
            } => {
                let found = match &archival.message_id {
                    Some(mid) => self
                        .store
                        .find_archived(mid, archival.sent_date.as_deref())
                        .ok()
                        .flatten(),
                    None => None,
                };
                if let Some(target) = found.filter(|t| *t != name) {
                    let target_id = spool::parse_id(&target)?;
                    // A merged item keeps its own archived form too (stored once by hash).
                    let merged = match self.parse(id, true) {
                        Ok(Parsed::Keep {
                            archival, content, ..
                        }) => self
                            .store
                            .put_content(&archival.content_sha256, content.as_slice())
                            .and_then(|()| {
                                self.store.merge(&name, &target, &archival, attempts, now.0)
                            }),
                        Ok(Parsed::Drop { .. }) | Err(_) => {
                            self.store.merge(&name, &target, &archival, attempts, now.0)
                        }
                    };
                    match merged {
                        Ok(()) => {
                            let _ = self.queue.on_match_result(
                                id,
                                MatchResult::Found(ItemId(target_id)),
                                now,
                            );
                            tracing::debug!(id = %name, into = %target, "merged");
                        }
                        Err(e) => {
                            let _ = self.queue.on_failed(id, e.to_string(), now);
                            let _ = self.store.set_state(
                                &name,
                                "failed",
                                attempts,
                                Some(&e.to_string()),
                                None,
                                now.0,
                            );
                        }
                    }
                    return None;
                }
                let next = self
                    .queue
                    .on_match_result(id, MatchResult::NotFound, now)
                    .ok()
                    .flatten();
                let state = if next.is_some() {
                    "archiving"
                } else {
                    "waiting"
                };
                let _ = self.store.set_state(
                    &name,
                    state,
                    attempts,
                    None,
                    display_sender.as_deref(),
                    now.0,
                );
                next
            }
        }
    }

    fn archive(&mut self, id: ItemId, now: Timestamp) {
        let name = spool::format_id(id.0);
        let attempts = self.attempts(id);
        let result = match self.parse(id, true) {
            Ok(Parsed::Keep {
                archival, content, ..
            }) => self
                .store
                .put_content(&archival.content_sha256, content.as_slice())
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    self.store
                        .archive(&name, &archival, attempts, now.0)
                        .map_err(|e| e.to_string())
                }),
            Ok(Parsed::Drop { reason, .. }) => Err(format!("dropped on archive: {reason}")),
            Err(e) => Err(e),
        };
        match result {
            Ok(target) => {
                let _ = self.queue.on_archived(id, now);
                tracing::debug!(id = %name, archived_as = %target, "archived");
            }
            Err(reason) => {
                let _ = self.queue.on_failed(id, reason.clone(), now);
                let _ = self
                    .store
                    .set_state(&name, "failed", attempts, Some(&reason), None, now.0);
                tracing::error!(id = %name, %reason, "archive failed");
            }
        }
    }

    /// Stores again the archived form of a settled item whose content did not survive a crash
    /// (it was not yet durable, so the item's spool segment is still live and holds it).
    fn restore_content(&mut self, id: ItemId, location: Location, sha256: &str) {
        let name = spool::format_id(id.0);
        let restored = match self.parse_at(id, location, true) {
            Ok(Parsed::Keep {
                archival, content, ..
            }) if archival.content_sha256 == *sha256 => self
                .store
                .put_content(sha256, content.as_slice())
                .map_err(|e| e.to_string()),
            Ok(_) => Err("the spooled message no longer gives that archived form".to_owned()),
            Err(e) => Err(e),
        };
        match restored {
            Ok(()) => {
                tracing::warn!(id = %name, "archived content lost in a crash: archived again from the spool")
            }
            Err(reason) => {
                tracing::error!(id = %name, %reason, "archived content lost in a crash and not restored")
            }
        }
    }

    /// Reads, parses and classifies an item. A panic in the parser fails the item, never the
    /// server.
    fn parse(&mut self, id: ItemId, with_content: bool) -> Result<Parsed, String> {
        let location = *self.journals.get(&id).ok_or("unknown item")?;
        self.parse_at(id, location, with_content)
    }

    /// [`parse`](Self::parse) for an item at a known place in the spool.
    fn parse_at(
        &mut self,
        id: ItemId,
        location: Location,
        with_content: bool,
    ) -> Result<Parsed, String> {
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
        let bytes = match handed {
            Some(bytes) => bytes,
            None => std::borrow::Cow::Owned(
                read_back(&mut self.log, &self.data_dir, id, location)
                    .map_err(|e| format!("spool: {e}"))?,
            ),
        };
        let journal = &self.policy.journals[location.journal];
        let policy = &self.policy;
        let parsed = catch_unwind(AssertUnwindSafe(|| {
            classify(policy, journal, &bytes, with_content)
        }))
        .map_err(|_| "the parser panicked".to_owned())?;
        Ok(parsed.map_content(|span| match span {
            Span::Part(range) => Content::Part {
                bytes: bytes.into_owned(),
                range,
            },
            Span::Own(own) => Content::Own(own),
        }))
    }
}

/// Reads an item's bytes back from the spool: from its log segment, kept open for the next
/// item (mostly in the same one), or from the item's own data file. Never a scan of the log:
/// the committer records an offset for every inline record, so no offset means a data file.
fn read_back(
    log: &mut Option<(u64, std::fs::File)>,
    data_dir: &std::path::Path,
    id: ItemId,
    location: Location,
) -> std::io::Result<Vec<u8>> {
    let name = spool::format_id(id.0);
    let Some(offset) = location.log_offset else {
        return spool::read_data_file(data_dir, &name);
    };
    let file = match log {
        Some((segment, file)) if *segment == location.segment => file,
        _ => {
            let file = spool::open_segment(data_dir, location.segment)?;
            &log.insert((location.segment, file)).1
        }
    };
    spool::read_inline(file, &name, location.segment, offset)
}

/// Parses and classifies one item ([`mailjournal::ingest`]); the archived form and its hash
/// only `with_content` (matching needs the key, not the content).
fn classify(policy: &Policy, journal: &Journal, bytes: &[u8], with_content: bool) -> Parsed<Span> {
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
                format: item.format().as_str().to_owned(),
                content_sha256: if with_content {
                    spool::hex(&Sha256::digest(archived))
                } else {
                    String::new()
                },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, request_retry};
    use mailjournal::definition::{JournalType, provision};

    fn state(data_dir: &std::path::Path, id: &str) -> String {
        let db = crate::store::open_read_only(data_dir).unwrap();
        db.query_row("SELECT state FROM items WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    }

    /// A pipeline over a fresh data directory with the starter definition taking EML items.
    fn eml_pipeline(name: &str) -> (std::path::PathBuf, Pipeline) {
        let dir = crate::testing::temp_dir(&format!("pipeline-{name}"));
        std::fs::create_dir_all(dir.join("spool/data")).unwrap();
        let pipeline = eml_pipeline_over(&dir);
        (dir, pipeline)
    }

    /// A pipeline over an existing data directory, as a new process would open it.
    fn eml_pipeline_over(dir: &std::path::Path) -> Pipeline {
        let mut config = provision::starter_config("contoso.com").unwrap();
        config.journal[0].journal_type = JournalType::Eml;
        let (policy, _) = Policy::from_config(&config).unwrap();
        let store = SqliteStore::open(dir).unwrap();
        Pipeline::new(
            Arc::new(policy),
            dir.to_path_buf(),
            Box::new(store),
            Duration::seconds(1),
            Arc::default(),
        )
    }

    #[test]
    fn an_archived_form_borrowed_from_the_item_is_a_span_of_it_not_a_copy() {
        use std::borrow::Cow;
        let bytes = b"Received: x\r\n\r\noriginal message".to_vec();
        assert!(matches!(
            span_in(&bytes, Cow::Borrowed(&bytes[15..])),
            Span::Part(range) if range == (15..bytes.len())
        ));
        assert!(matches!(
            span_in(&bytes, Cow::Borrowed(&bytes[..])),
            Span::Part(range) if range == (0..bytes.len())
        ));
        let elsewhere = b"original message".to_vec();
        assert!(matches!(
            span_in(&bytes, Cow::Borrowed(&elsewhere)),
            Span::Own(own) if own == elsewhere
        ));
        assert!(matches!(
            span_in(&bytes, Cow::Owned(b"decoded".to_vec())),
            Span::Own(own) if own == b"decoded"
        ));
    }

    /// The SHA-256 of an item's archived form, as the store recorded it.
    fn content_sha256(data_dir: &std::path::Path, id: &str) -> String {
        let db = crate::store::open_read_only(data_dir).unwrap();
        db.query_row(
            "SELECT content_sha256 FROM items WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn archived_content_lost_in_a_crash_is_archived_again_from_the_spool() {
        let (dir, mut pipeline) = eml_pipeline("lost-content");
        let now = clock::now();
        let id = now.0 << 20;
        spool_message(&dir, id, "lost@contoso.com");
        let record = Record::for_test(id, now.0);
        pipeline.accept(&record, true);
        for s in 0..4 {
            pipeline.step(now + Duration::seconds(s));
        }
        let name = spool::format_id(id);
        assert_eq!(state(&dir, &name), "archived");
        drop(pipeline);
        // A power loss before the content was made durable: its file came back empty.
        let sha = content_sha256(&dir, &name);
        std::fs::write(dir.join("archive/pending").join(&sha), b"").unwrap();

        let mut pipeline = eml_pipeline_over(&dir);
        assert!(
            crate::store::read_content(&dir, &sha).is_err(),
            "checked at open"
        );
        pipeline.recover(|on_record| on_record(record.clone()));
        let restored = crate::store::read_content(&dir, &sha).unwrap();
        assert_eq!(spool::hex(&Sha256::digest(&restored)), sha);
        assert_eq!(
            state(&dir, &name),
            "archived",
            "settled, not archived twice"
        );
    }

    /// A minimal EML message with this Message-ID.
    fn eml(message_id: &str) -> Vec<u8> {
        format!("From: alice@contoso.com\r\nTo: bob@contoso.com\r\nMessage-ID: <{message_id}>\r\n\r\nhi\r\n")
            .into_bytes()
    }

    /// Puts an EML message in the spool as item `id`'s own data file.
    fn spool_message(dir: &std::path::Path, id: u64, message_id: &str) {
        std::fs::write(
            dir.join("spool/data").join(spool::format_id(id)),
            eml(message_id),
        )
        .unwrap();
    }

    #[test]
    fn sessions_are_told_to_pause_while_due_items_wait_and_not_once_they_are_done() {
        let (dir, mut pipeline) = eml_pipeline("in-flow");
        let in_flow = pipeline.in_flow();
        let now = clock::now();
        // Received a minute ago (a backlog, or a restart after an outage): due for a minute.
        let id = now.0 << 20;
        spool_message(&dir, id, "late@contoso.com");
        pipeline.accept(&Record::for_test(id, now.0 - 60_000), true);
        pipeline.publish_lag();
        assert_eq!(in_flow.delay(), Some(super::super::in_flow::IN_FLOW_DELAY));
        // Its first attempt done, the next is a second away: nothing is late.
        pipeline.step(now);
        pipeline.publish_lag();
        assert_eq!(in_flow.delay(), None);
        // Fresh items due now are not a backlog.
        let fresh = id + 1;
        spool_message(&dir, fresh, "fresh@contoso.com");
        pipeline.accept(&Record::for_test(fresh, clock::now().0), true);
        pipeline.publish_lag();
        assert_eq!(in_flow.delay(), None);
    }

    #[test]
    fn settled_items_leave_memory_and_failed_ones_stay() {
        let (dir, mut pipeline) = eml_pipeline("prune");
        let now = clock::now();
        let (kept, lost) = (now.0 << 20, (now.0 << 20) + 1);
        spool_message(&dir, kept, "p@contoso.com");
        // `lost` has no data file: it fails.
        pipeline.accept(&Record::for_test(kept, now.0), true);
        pipeline.accept(&Record::for_test(lost, now.0), true);
        for s in 0..3 {
            pipeline.step(now + Duration::seconds(s));
        }
        assert_eq!(state(&dir, &spool::format_id(kept)), "archived");
        assert_eq!(state(&dir, &spool::format_id(lost)), "failed");
        assert_eq!(pipeline.queue.len(), 2, "nothing pruned within a minute");

        pipeline.step(now + Duration::minutes(2));
        assert_eq!(pipeline.queue.len(), 1);
        assert!(pipeline.queue.item(ItemId(lost)).is_some());
        assert_eq!(
            pipeline.journals.keys().collect::<Vec<_>>(),
            [&ItemId(lost)]
        );
    }

    #[test]
    fn handed_bytes_are_parsed_without_reading_the_spool_and_then_released() {
        let (dir, mut pipeline) = eml_pipeline("handed");
        let handoff = pipeline.handoff.clone();
        let now = clock::now();
        let id = now.0 << 20;
        let bytes = eml("h@contoso.com");
        let data = handoff.offer(Some(bytes.clone()));
        assert_eq!(data.as_deref(), Some(&bytes[..]));
        // Nothing is on disk: only the handed bytes can make the first attempt succeed.
        pipeline.take(&Record::for_test(id, now.0), data);
        pipeline.step(now);
        assert_eq!(state(&dir, &spool::format_id(id)), "waiting");
        pipeline.release_handed();
        assert_eq!(handoff.in_flight.load(Ordering::Acquire), 0);
        // A later attempt reads from the spool, which has nothing: the item fails.
        pipeline.step(now + Duration::minutes(2));
        assert_eq!(state(&dir, &spool::format_id(id)), "failed");
    }

    #[test]
    fn after_a_restart_items_resume_where_they_were() {
        let (dir, mut pipeline) = eml_pipeline("resume");
        let now = clock::now();
        let (waiting, failed) = (now.0 << 20, (now.0 << 20) + 1);
        spool_message(&dir, waiting, "w@contoso.com");
        let records = [
            Record::for_test(waiting, now.0),
            Record::for_test(failed, now.0),
        ];
        for record in &records {
            pipeline.accept(record, true);
        }
        pipeline.step(now);
        assert_eq!(state(&dir, &spool::format_id(waiting)), "waiting");
        assert_eq!(state(&dir, &spool::format_id(failed)), "failed");
        drop(pipeline);

        // A new process over the same data directory.
        let mut pipeline = eml_pipeline_over(&dir);
        pipeline.recover(|on_record| records.iter().cloned().for_each(on_record));
        let item = pipeline.queue.item(ItemId(waiting)).unwrap();
        assert_eq!(
            item.attempts, 1,
            "the attempt made before the restart counts"
        );
        assert!(matches!(
            pipeline.queue.item(ItemId(failed)).unwrap().state,
            mailjournal::queue::ItemState::Failed { .. }
        ));
        for s in 0..3 {
            pipeline.step(now + Duration::seconds(s));
        }
        // Two attempts left (one a second apart here), then archived; the failed one waits.
        assert_eq!(state(&dir, &spool::format_id(waiting)), "archived");
        assert_eq!(state(&dir, &spool::format_id(failed)), "failed");
    }

    #[test]
    fn a_stopping_pipeline_leaves_due_items_for_the_next_start() {
        let (dir, mut pipeline) = eml_pipeline("stopping");
        let now = clock::now();
        let ids: Vec<u64> = (0..(ROUND as u64 + 5)).map(|n| (now.0 << 20) + n).collect();
        for &id in &ids {
            pipeline.accept(&Record::for_test(id, now.0), true);
        }
        let stop = pipeline.stop_flag();
        stop.store(true, Ordering::Release);
        pipeline.step(now);
        // No round runs once the flag is set: every item is still waiting, unattempted.
        for &id in &ids {
            let item = pipeline.queue.item(ItemId(id)).unwrap();
            assert_eq!(item.attempts, 0);
        }
        assert_eq!(state(&dir, &spool::format_id(ids[0])), "waiting");
        stop.store(false, Ordering::Release);
        pipeline.step(now);
        // Otherwise every round runs, more than one here (the data files are missing: all
        // fail at their first attempt).
        for &id in &ids {
            assert_eq!(state(&dir, &spool::format_id(id)), "failed");
        }
    }

    /// Commits an EML message through the spool, as a session would.
    async fn commit_eml(spool: &spool::Spool, message_id: &str, now: Timestamp) -> Record {
        let mut writer = spool.begin().unwrap();
        writer.write(&eml(message_id)).unwrap();
        let record = Record::for_test(writer.id(), now.0);
        spool.commit(writer, record).await.unwrap().0
    }

    #[tokio::test]
    async fn a_sealed_segment_retires_once_every_item_in_it_is_settled() {
        let (dir, mut pipeline) = eml_pipeline("retire");
        // A new segment for every commit after the first.
        let limits = spool::SpoolLimits::one_batch_per_segment();
        let (spool, _) = spool::Spool::open(&dir, limits, &mut |_| {}).unwrap();
        pipeline.retire_from(spool.segments());
        let now = clock::now();
        let early = commit_eml(&spool, "early@contoso.com", now).await;
        let late = commit_eml(&spool, "late@contoso.com", now).await;
        let active = commit_eml(&spool, "active@contoso.com", now).await;
        let live = |segment: u64| dir.join(format!("spool/log/{segment:020}.log")).exists();

        pipeline.take(&early, None);
        for s in 0..4 {
            pipeline.step(now + Duration::seconds(s));
        }
        assert_eq!(state(&dir, &early.id), "archived");
        let sha = content_sha256(&dir, &early.id);
        let (pending, durable) = (
            dir.join("archive/pending").join(&sha),
            dir.join("archive").join(&sha[..2]).join(&sha),
        );
        assert!(
            pending.exists() && !durable.exists(),
            "not durable before retirement"
        );
        // `late` arrives only now: at the next prune it has had one attempt of three.
        pipeline.take(&late, None);
        pipeline.take(&active, None);
        let prune = now + Duration::minutes(2);
        assert!(pipeline.step(prune));
        pipeline.retire_settled_segments(prune);
        assert_eq!(state(&dir, &late.id), "waiting");
        assert!(!live(early.segment), "every item settled: retired");
        assert!(
            durable.exists() && !pending.exists(),
            "durable once retired"
        );
        assert!(live(late.segment), "an item still waits");
        assert!(live(active.segment), "the committer still appends to it");

        for s in 1..4 {
            pipeline.step(prune + Duration::seconds(s));
        }
        let next = prune + Duration::minutes(2);
        assert!(pipeline.step(next));
        pipeline.retire_settled_segments(next);
        assert_eq!(state(&dir, &late.id), "archived");
        assert!(!live(late.segment) && live(active.segment));
        let db = crate::store::open_read_only(&dir).unwrap();
        let retired: i64 = db
            .query_row("SELECT COUNT(*) FROM spool_retired", [], |r| r.get(0))
            .unwrap();
        assert_eq!(retired, 2);
        drop(spool);

        // The next start reads only the live segment; retired items stay readable.
        let mut recovered = Vec::new();
        let (_spool, _) = spool::Spool::open(&dir, limits, &mut |r| recovered.push(r.id)).unwrap();
        assert_eq!(recovered, [active.id]);
        assert_eq!(
            spool::read_data(&dir, &early.id, early.log_offset).unwrap(),
            eml("early@contoso.com")
        );
    }

    #[test]
    fn the_handoff_stops_at_its_limit() {
        let handoff = Handoff::default();
        let big = vec![0u8; Handoff::LIMIT / 2 + 1];
        assert!(handoff.offer(Some(big.clone())).is_some());
        assert!(handoff.offer(Some(big.clone())).is_none(), "over the limit");
        handoff.release(big.len());
        assert!(handoff.offer(Some(big)).is_some());
    }

    #[test]
    fn a_failed_item_stays_failed_until_an_operator_retries_it() {
        let (dir, mut pipeline) = eml_pipeline("retry");

        let now = clock::now();
        let id = spool::format_id(now.0 << 20);
        let record = Record::for_test(now.0 << 20, now.0);
        // The data file is missing: the first attempt fails and the item stays failed.
        pipeline.accept(&record, true);
        pipeline.step(now);
        assert_eq!(state(&dir, &id), "failed");
        pipeline.step(now + Duration::minutes(10));
        assert_eq!(state(&dir, &id), "failed", "no automatic retry");

        spool_message(&dir, now.0 << 20, "r@contoso.com");
        assert!(request_retry(&dir, &id).unwrap());
        assert!(
            !request_retry(&dir, &id).unwrap(),
            "only a failed item can be retried"
        );
        let later = now + Duration::minutes(11);
        pipeline.take_retries(later);
        for s in 0..3 {
            pipeline.step(later + Duration::seconds(s));
        }
        assert_eq!(state(&dir, &id), "archived");
    }
}
