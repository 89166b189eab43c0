//! The engine that joins the spool, the queue and the archive: open one, give its spool to
//! whatever receives messages, and it archives each committed message in the background.
//!
//! [`Engine::open`] runs the start-up order a receiver needs: the archive's connectors are
//! brought up to the configuration, the spool is recovered and every item that is not settled
//! in the archive goes back into the queue (in one transaction), queue ids are set to go on
//! after the newest the archive holds, and the pipeline thread starts. From then on every
//! record the spool commits reaches the pipeline straight from the spool's committer, with
//! its bytes when they are small (a bounded allowance: under a backlog the pipeline reads them
//! back instead of holding them). [`Engine::failed`] completes when the engine can no longer
//! do its work (the pipeline died, or the spool cannot make messages durable): a server
//! should then stop, so that a restart recovers.
//!
//! ```
//! use std::sync::Arc;
//! use mailjournal::definition::{Policy, provision};
//! use mailjournal::engine::{Engine, EngineOptions};
//! use mailjournal::queue::StateName;
//! use mailjournal::spool::{Clock, Envelope, SystemClock};
//!
//! let dir = std::env::temp_dir().join(format!("engine-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let mut config = provision::starter_config("contoso.com").unwrap();
//! config.journal[0].journal_type = mailjournal::definition::JournalType::Eml;
//! let (policy, _warnings) = Policy::from_config(&config).unwrap();
//! let mut options = EngineOptions::new(&dir);
//! options.attempt_interval = mailjournal::queue::Duration::seconds(1);
//! let (engine, started) = Engine::open_embedded(Arc::new(policy), &dir, options)?;
//! assert_eq!(started.recovery.committed, 0);
//!
//! let mut message = engine.spool().begin();
//! message.write(b"From: alice@contoso.com\r\nTo: bob@contoso.com\r\nMessage-ID: <1@contoso.com>\r\n\r\nhi\r\n")?;
//! let committed = engine
//!     .spool()
//!     .commit(message, Envelope::new("journaling@journal.contoso.com", SystemClock.now()))
//!     .wait()?;
//!
//! // Three match attempts a second apart, then archived.
//! let archive = mailjournal::archive::embedded::Reader::open(&dir)?;
//! let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
//! while archive.item(committed.id)?.map(|i| i.state) != Some(StateName::Archived) {
//!     assert!(std::time::Instant::now() < deadline, "not archived");
//!     std::thread::sleep(std::time::Duration::from_millis(100));
//! }
//! engine.shutdown();
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod health;
mod in_flow;
mod pipeline;

pub use health::{StoreHealth, health_path, read_health};
pub use in_flow::{BEHIND_FROM, CAUGHT_UP_BELOW, IN_FLOW_DELAY, InFlow};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SendError, Sender};
use std::task::{Context, Poll};

use mailjournal_archive::{ArchiveError, ArchiveIndex, ContentStore};
use mailjournal_definition::Policy;
use mailjournal_queue::Duration;
use mailjournal_spool::{Alarm, Raised, Recovery, Spool, SpoolOptions, SpoolReader};

use pipeline::{Input, Pipeline};

/// How an engine is set up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The spool's directory.
    pub spool_dir: PathBuf,
    /// The spool's limits and clock (the engine takes its time from the same clock).
    pub spool: SpoolOptions,
    /// Time between match attempts (the queue's default: a minute).
    pub attempt_interval: Duration,
    /// How long a day of the retention periods lasts: a day, except in tests and
    /// measurements that cannot wait for one.
    pub retention_day: Duration,
    /// Where the archive store's health is told to other processes (see [`read_health`]);
    /// `None`: nowhere.
    pub health_file: Option<PathBuf>,
}

impl EngineOptions {
    /// Defaults, with the spool in `DATA_DIR/spool`.
    pub fn new(data_dir: &Path) -> EngineOptions {
        EngineOptions {
            spool_dir: data_dir.join("spool"),
            spool: SpoolOptions::default(),
            attempt_interval: Duration::minutes(1),
            retention_day: Duration::days(1),
            health_file: Some(health_path(data_dir)),
        }
    }
}

/// Why an engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The archive store failed.
    #[error("archive: {0}")]
    Archive(#[from] ArchiveError),
    /// The spool could not be opened or recovered.
    #[error("spool: {0}")]
    Spool(#[source] std::io::Error),
    /// The pipeline thread could not be started.
    #[error("cannot start the pipeline thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Why a running engine can no longer do its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EngineFailure {
    /// The archiving pipeline stopped unexpectedly (a panic outside the parser's guard):
    /// mail would be taken that nothing archives.
    #[error("the archiving pipeline stopped unexpectedly")]
    PipelineDied,
    /// The spool can no longer make messages durable (a sync failed); every commit is refused.
    #[error("the spool can no longer make messages durable (see the log); a restart recovers it")]
    SpoolUnusable,
}

/// What the engine found when it started.
#[derive(Debug)]
pub struct Started {
    /// What spool recovery cut, removed and set aside, and how many records it handed over.
    pub recovery: Recovery,
}

/// A running engine: the spool to write messages into, and the pipeline thread archiving
/// what it commits.
#[derive(Debug)]
pub struct Engine {
    spool: Arc<Spool>,
    health_file: Option<PathBuf>,
    in_flow: Arc<InFlow>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    input: Sender<Input>,
    pipeline: Option<std::thread::JoinHandle<()>>,
    pipeline_died: Alarm,
}

impl Engine {
    /// Starts an engine over an archive (`index` and `content`) for the definitions of
    /// `policy`, recovering the spool in `options.spool_dir`.
    pub fn open(
        policy: Arc<Policy>,
        index: Box<dyn ArchiveIndex>,
        content: Box<dyn ContentStore>,
        options: EngineOptions,
    ) -> Result<(Engine, Started), EngineError> {
        let clock = options.spool.clock.clone();
        let mut pipeline = Pipeline::new(
            policy,
            index,
            content,
            SpoolReader::new(&options.spool_dir),
            clock,
            Duration(options.attempt_interval.0.max(1)),
        );
        pipeline.record_connectors()?;
        if let Some(path) = &options.health_file {
            match health::HealthFile::open(path) {
                Ok(file) => pipeline.report_health(file),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "no health file: status cannot say when the archive store fails")
                }
            }
        }
        let newest = pipeline.newest_item_id()?;
        let (input, inputs) = std::sync::mpsc::channel();
        let handoff = pipeline.handoff();
        let to_pipeline = input.clone();
        let consumer = move |record, inline| {
            let data = handoff.offer(inline);
            // Fails only once the pipeline has stopped (shutdown): the item is in the spool
            // and recovery takes it into the queue at the next start.
            if let Err(SendError(Input::Accepted(_, Some(data)))) =
                to_pipeline.send(Input::Accepted(Box::new(record), data))
            {
                handoff.release(data.len());
            }
        };
        let (spool, recovery) = pipeline
            .recover(|on_record| {
                Spool::open(
                    &options.spool_dir,
                    options.spool.clone(),
                    on_record,
                    Box::new(consumer),
                )
            })
            .map_err(EngineError::Spool)?;
        if let Some(newest) = newest {
            spool.ids_after(newest);
        }
        pipeline.retire_from(spool.segments());
        pipeline.retain(
            options.spool_dir.clone(),
            Duration(options.retention_day.0.max(1)),
        );
        tracing::info!(
            committed = recovery.committed,
            live_segments = recovery.segments.len(),
            torn_tail_bytes = recovery.truncated_bytes,
            discarded_unacknowledged = recovery.discarded.len(),
            quarantined = recovery.quarantined.len(),
            "spool recovered"
        );
        for id in &recovery.quarantined {
            tracing::error!(id = %id, "corrupt spooled message quarantined");
        }
        let stop = pipeline.stop_flag();
        let in_flow = pipeline.in_flow();
        let pipeline_died = Alarm::default();
        let guard = pipeline_died.guard();
        let thread = std::thread::Builder::new()
            .name("pipeline".into())
            // At the sessions' priority. It ran at nice 10 until 2026-12-02: then, whenever
            // acceptance alone filled the CPU, archiving got a tenth of one, fell behind and
            // in-flow control paused the senders (20 sessions of 20 KB, match attempts a
            // second apart: in-flow engaged within half a minute at nice 10, never in two
            // minutes at nice 0), while the clear-text rate did not change (smtp-compare
            // journal/sink 0.72 at nice 10, 0.71 at nice 0, one run each).
            .spawn(move || {
                pipeline.run(inputs);
                guard.disarm();
            })
            .map_err(EngineError::Thread)?;
        Ok((
            Engine {
                spool: Arc::new(spool),
                health_file: options.health_file.clone(),
                in_flow,
                stop,
                input,
                pipeline: Some(thread),
                pipeline_died,
            },
            Started { recovery },
        ))
    }

    /// [`open`](Self::open) over the embedded archive of `data_dir` (SQLite and files).
    #[cfg(feature = "embedded")]
    pub fn open_embedded(
        policy: Arc<Policy>,
        data_dir: &Path,
        options: EngineOptions,
    ) -> Result<(Engine, Started), EngineError> {
        let (index, content) = mailjournal_archive::embedded::open(data_dir)?;
        Engine::open(policy, Box::new(index), Box::new(content), options)
    }

    /// The spool: write messages with [`Spool::begin`] and [`Spool::commit`].
    pub fn spool(&self) -> &Arc<Spool> {
        &self.spool
    }

    /// Whether archiving is behind: while it is, a receiver should pause before each new
    /// message ([`InFlow::delay`]).
    pub fn in_flow(&self) -> &Arc<InFlow> {
        &self.in_flow
    }

    /// Completes once the engine can no longer do its work, saying why.
    pub fn failed(&self) -> Failed<'_> {
        Failed {
            pipeline: self.pipeline_died.raised(),
            spool: self.spool.unusable().raised(),
        }
    }

    /// Why the engine can no longer do its work, if it cannot (the non-blocking
    /// [`failed`](Self::failed)).
    pub fn failure(&self) -> Option<EngineFailure> {
        if self.pipeline_died.is_raised() {
            Some(EngineFailure::PipelineDied)
        } else if self.spool.unusable().is_raised() {
            Some(EngineFailure::SpoolUnusable)
        } else {
            None
        }
    }

    /// A handle that says whether a receiver on this engine should be sent mail now: what a
    /// load balancer's readiness check asks. It does not keep the engine alive.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            pipeline_died: self.pipeline_died.clone(),
            spool: Arc::downgrade(&self.spool),
            health_file: self.health_file.clone(),
        }
    }

    /// Stops: the pipeline ends its current round of due actions and takes what the spool
    /// committed before it returns; items it has not reached resume at the next start. Blocks
    /// until the pipeline thread (and, if no one else holds the spool, the committer) ended.
    pub fn shutdown(self) {
        let Engine {
            spool,
            stop,
            input,
            pipeline,
            ..
        } = self;
        stop.store(true, Ordering::Release);
        // The last holder of the spool joins its committer, whose last records are then
        // already on their way to the pipeline.
        drop(spool);
        let _ = input.send(Input::Shutdown);
        if let Some(thread) = pipeline {
            let _ = thread.join();
        }
        tracing::info!("engine stopped");
    }
}

/// Whether an engine can take mail now ([`Engine::readiness`]).
#[derive(Debug, Clone)]
pub struct Readiness {
    pipeline_died: Alarm,
    spool: std::sync::Weak<Spool>,
    health_file: Option<PathBuf>,
}

/// Why an engine should not be sent mail now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// It can no longer work at all.
    #[error("{0}")]
    Failed(EngineFailure),
    /// The engine has been shut down.
    #[error("the engine is shut down")]
    Stopped,
    /// Free space on the spool's file system is below the reserve: mail is answered 452.
    #[error("free space on the spool's file system is below the reserve (mail is answered 452)")]
    LowOnSpace,
    /// The archive store fails: mail is spooled, nothing is archived until it heals.
    #[error("the archive store is failing since {since}: {error}")]
    ArchiveStore {
        /// When it began failing (RFC 3339).
        since: String,
        /// The last error.
        error: String,
    },
}

impl Readiness {
    /// `Ok` when the pipeline runs, the spool can make messages durable and has room, and
    /// the archive store works; the first reason otherwise.
    pub fn check(&self) -> Result<(), NotReady> {
        if self.pipeline_died.is_raised() {
            return Err(NotReady::Failed(EngineFailure::PipelineDied));
        }
        let spool = self.spool.upgrade().ok_or(NotReady::Stopped)?;
        if spool.unusable().is_raised() {
            return Err(NotReady::Failed(EngineFailure::SpoolUnusable));
        }
        if spool.low_on_space() {
            return Err(NotReady::LowOnSpace);
        }
        drop(spool);
        if let Some(StoreHealth::Failing { since, error }) =
            self.health_file.as_deref().and_then(read_health)
        {
            return Err(NotReady::ArchiveStore {
                since: since.rfc3339(),
                error,
            });
        }
        Ok(())
    }
}

/// The future of [`Engine::failed`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Failed<'a> {
    pipeline: Raised<'a>,
    spool: Raised<'a>,
}

impl Future for Failed<'_> {
    type Output = EngineFailure;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<EngineFailure> {
        if Pin::new(&mut self.pipeline).poll(cx).is_ready() {
            return Poll::Ready(EngineFailure::PipelineDied);
        }
        if Pin::new(&mut self.spool).poll(cx).is_ready() {
            return Poll::Ready(EngineFailure::SpoolUnusable);
        }
        Poll::Pending
    }
}
