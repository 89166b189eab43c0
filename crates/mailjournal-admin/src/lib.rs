//! The operator's view of a mailjournal receiver, for embedding next to its SMTP listener on
//! the same tokio runtime:
//!
//! * [`Metrics`] ([`metrics`]): the Prometheus metrics (`prometheus-client`, the Prometheus
//!   project's own Rust client): counters the receiver bumps, gauges read from the data
//!   directory's `mailjournal::status::StatusReport` at each scrape;
//! * [`http`]: the admin listener (hyper): `/metrics`, `/healthz`, `/readyz`, the journaling
//!   page ([`page`]) and a page per item, with an optional bearer token;
//! * [`alert`] and [`courier`]: connector status changes told to webhooks, from a durable
//!   outbox, retried with backoff; [`ConnectorAlerts`] joins them.
//!
//! Everything it shows is read from the data directory the way `journal-server status`
//! reads it, so the page, the metrics, the alerts and the command line agree.

pub mod alert;
pub mod courier;
pub mod http;
pub mod metrics;
pub mod page;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailjournal::spool::{Clock, SystemClock};
use mailjournal::status::ArchiveSource;

pub use http::{Admin, serve};
pub use metrics::{ActiveSession, Metrics};

use alert::Outbox;

/// How often [`ConnectorAlerts::run`] looks at the connectors' statuses by default.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// Why the alerts could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The outbox in `DATA_DIR/alerts` could not be opened.
    #[error("alert outbox {path}: {source}")]
    Outbox {
        /// Its directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The TLS client for `https://` webhooks could not be made.
    #[error("alert TLS client: {0}")]
    Tls(#[from] rustls::Error),
}

/// Connector alerts for a data directory: [`open`](Self::open) at start-up (so that an
/// unusable outbox stops the start), then [`run`](Self::run) beside the listener.
pub struct ConnectorAlerts {
    source: Arc<ArchiveSource>,
    webhooks: Vec<String>,
    outbox: Outbox,
    watch: alert::ConnectorWatch,
    pending: Vec<alert::Pending>,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for ConnectorAlerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorAlerts")
            .field("source", &self.source)
            .field("webhooks", &self.webhooks)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl ConnectorAlerts {
    /// Opens the outbox in the data directory of `source` for `webhooks` (what was pending
    /// at the last stop is delivered first; alerts for a webhook no longer configured are
    /// dropped, with a log line).
    pub fn open(
        source: Arc<ArchiveSource>,
        webhooks: Vec<String>,
    ) -> Result<ConnectorAlerts, AlertError> {
        let data_dir = source.data_dir().to_owned();
        let (outbox, watch, pending) =
            Outbox::open(&data_dir).map_err(|source| AlertError::Outbox {
                path: data_dir.join("alerts"),
                source,
            })?;
        let (pending, dropped): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|p| webhooks.contains(&p.webhook_url));
        for p in dropped {
            tracing::warn!(webhook = %p.webhook_url, alert = %p.alert.id, "pending alert dropped: its webhook is no longer configured");
            if let Err(e) = outbox.delivered(p.seq) {
                tracing::warn!(error = %e, "pending alert not removed");
            }
        }
        Ok(ConnectorAlerts {
            source,
            webhooks,
            outbox,
            watch,
            pending,
            tls: courier::tls_connector(&[])?,
        })
    }

    /// Trusts `roots` (DER) for `https://` webhooks besides the Web PKI's.
    pub fn trust(
        mut self,
        roots: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Result<ConnectorAlerts, AlertError> {
        self.tls = courier::tls_connector(roots)?;
        Ok(self)
    }

    /// Looks at the connectors every `interval` and tells each status change to every
    /// webhook through the outbox. Runs until dropped; the outbox keeps what it has not
    /// delivered.
    pub async fn run(self, interval: Duration) {
        let ConnectorAlerts {
            source,
            webhooks,
            outbox,
            mut watch,
            pending,
            tls,
        } = self;
        let outbox = Arc::new(Mutex::new(outbox));
        let (to_courier, incoming) = tokio::sync::mpsc::unbounded_channel();
        // Dropping the set (when this future ends or is dropped) stops the courier.
        let mut courier = tokio::task::JoinSet::new();
        courier.spawn(courier::run(outbox.clone(), pending, incoming, tls));
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let reading = source.clone();
            let now = SystemClock.now();
            let report = match tokio::task::spawn_blocking(move || reading.status(1, now)).await {
                Ok(Ok(report)) => report,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "alerts: the connectors' status cannot be read");
                    continue;
                }
                Err(_) => continue,
            };
            let before = watch.clone();
            let alerts = watch.changes(&report.connectors, now);
            if watch == before {
                continue;
            }
            for alert in &alerts {
                tracing::warn!(definition = %alert.definition, old = %alert.old_status, new = %alert.new_status, "connector status changed");
            }
            let (outbox, hooks, seen) = (outbox.clone(), webhooks.clone(), watch.clone());
            let made = tokio::task::spawn_blocking(move || {
                outbox
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .enqueue(&alerts, &hooks, &seen)
            })
            .await;
            match made {
                Ok(Ok(made)) => {
                    let _ = to_courier.send(made);
                }
                Ok(Err(e)) => {
                    // Not durable, so not recorded either: the next look finds the change
                    // again.
                    tracing::error!(error = %e, "alerts could not be written; tried again");
                    watch = before;
                }
                Err(_) => watch = before,
            }
        }
    }
}
