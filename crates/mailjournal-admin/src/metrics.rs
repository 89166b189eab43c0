//! Prometheus metrics: counters the receiver bumps as it works, and gauges read from a
//! [`StatusReport`] when they are scraped (so that they say what `status` says).

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use mailjournal::definition::Policy;
use mailjournal::queue::ConnectorStatus;
use mailjournal::status::StatusReport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DefinitionLabels {
    definition: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpoolLabels {
    /// `live` (read at start-up) or `kept` (retired, for `get --as-received`).
    segments: &'static str,
}

/// One definition's counters, made when the metrics are, so that counting a message takes
/// no lock and no allocation.
#[derive(Debug, Clone)]
struct DefinitionCounters {
    accepted: Counter,
    bytes: Counter,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// A receiver's metrics. Clone-free: share it in an `Arc`.
///
/// ```
/// use mailjournal::definition::{Policy, provision};
/// use mailjournal_admin::Metrics;
/// let mut config = provision::starter_config("contoso.com").unwrap();
/// config.journal[0].description = "Microsoft 365".into();
/// config.journal[0].additional_source_ip_ranges = vec!["203.0.113.0/24".into()];
/// let (policy, _) = Policy::from_config(&config).unwrap();
/// let metrics = Metrics::new(&policy);
/// metrics.message_accepted(0, 20_000);
/// metrics.refused(550);
/// let text = metrics.encode(None);
/// assert!(text.contains("mailjournal_messages_accepted_total{definition=\"Microsoft 365\"} 1\n"));
/// assert!(text.contains("mailjournal_bytes_accepted_total{definition=\"Microsoft 365\"} 20000\n"));
/// assert!(text.contains("mailjournal_messages_rejected_total{code=\"550\"} 1\n"));
/// assert!(text.ends_with("# EOF\n"));
/// ```
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    definitions: Vec<DefinitionCounters>,
    rejected: Family<CodeLabels, Counter>,
    sessions_active: Gauge,
    tls_sessions: Counter,
    commit_duration: Histogram,
    spool_bytes: Family<SpoolLabels, Gauge>,
    queue_items: Family<StateLabels, Gauge>,
    archive_lag: FloatGauge,
    connector_up: Family<DefinitionLabels, Gauge>,
    connector_last_message: Family<DefinitionLabels, FloatGauge>,
    /// One scrape at a time sets the gauges and encodes them.
    scrape: Mutex<()>,
}

impl Metrics {
    /// Metrics for the definitions of `policy` (their counters start at zero, so that a
    /// rate is defined from the first scrape).
    pub fn new(policy: &Policy) -> Metrics {
        let mut registry = Registry::with_prefix("mailjournal");
        let accepted = Family::<DefinitionLabels, Counter>::default();
        let bytes = Family::<DefinitionLabels, Counter>::default();
        let definitions = policy
            .journals
            .iter()
            .map(|journal| {
                let labels = DefinitionLabels {
                    definition: journal.definition.description.clone(),
                };
                DefinitionCounters {
                    accepted: accepted.get_or_create(&labels).clone(),
                    bytes: bytes.get_or_create(&labels).clone(),
                }
            })
            .collect();
        let metrics = Metrics {
            definitions,
            rejected: Family::default(),
            sessions_active: Gauge::default(),
            tls_sessions: Counter::default(),
            // 0.5 ms to 8 s: a group commit on a fast disk to a large message on a slow one.
            commit_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
            spool_bytes: Family::default(),
            queue_items: Family::default(),
            archive_lag: FloatGauge::default(),
            connector_up: Family::default(),
            connector_last_message: Family::default(),
            scrape: Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "messages_accepted",
            "Messages accepted (answered 250) per journal definition",
            accepted,
        );
        registry.register(
            "bytes_accepted",
            "Bytes of the messages accepted per journal definition",
            bytes,
        );
        registry.register(
            "messages_rejected",
            "Commands and messages refused, by SMTP reply code",
            metrics.rejected.clone(),
        );
        registry.register(
            "sessions_active",
            "SMTP sessions open now",
            metrics.sessions_active.clone(),
        );
        registry.register(
            "tls_sessions",
            "SMTP sessions that completed a STARTTLS handshake",
            metrics.tls_sessions.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "From the end of DATA to the message being durable (the 250)",
            metrics.commit_duration.clone(),
        );
        registry.register(
            "spool_bytes",
            "Bytes of the spool's segments and large-message files",
            metrics.spool_bytes.clone(),
        );
        registry.register(
            "queue_items",
            "Journal items per state (the states of `status`)",
            metrics.queue_items.clone(),
        );
        registry.register(
            "archive_lag_seconds",
            "Age of the oldest item not settled yet (0 when none waits)",
            metrics.archive_lag.clone(),
        );
        registry.register(
            "connector_up",
            "1 while a definition receives within its period of inactivity, 0 when down; absent when never seen or disabled",
            metrics.connector_up.clone(),
        );
        registry.register(
            "connector_last_message_timestamp_seconds",
            "When a definition's last message arrived (Unix time)",
            metrics.connector_last_message.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// A message for the definition at `journal` (its index in the policy) was accepted.
    pub fn message_accepted(&self, journal: usize, bytes: u64) {
        if let Some(counters) = self.definitions.get(journal) {
            counters.accepted.inc();
            counters.bytes.inc_by(bytes);
        }
    }

    /// A command or a message was refused with `code`.
    pub fn refused(&self, code: u16) {
        self.rejected.get_or_create(&CodeLabels { code }).inc();
    }

    /// A session opened; it counts as active until the guard is dropped.
    pub fn session_opened(&self) -> ActiveSession {
        self.sessions_active.inc();
        ActiveSession(self.sessions_active.clone())
    }

    /// A session completed its TLS handshake.
    pub fn tls_established(&self) {
        self.tls_sessions.inc();
    }

    /// A message became durable `elapsed` after its end of data.
    pub fn commit_observed(&self, elapsed: std::time::Duration) {
        self.commit_duration.observe(elapsed.as_secs_f64());
    }

    /// The exposition text ([`CONTENT_TYPE`]), the gauges set from `report` (without one,
    /// they are left out: the status could not be read).
    pub fn encode(&self, report: Option<&StatusReport>) -> String {
        let _one = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        self.observe(report);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    fn observe(&self, report: Option<&StatusReport>) {
        // Cleared first: a definition removed or a state emptied must not linger.
        self.queue_items.clear();
        self.spool_bytes.clear();
        self.connector_up.clear();
        self.connector_last_message.clear();
        let Some(report) = report else {
            self.archive_lag.set(0.0);
            return;
        };
        for (state, n) in &report.counts {
            self.queue_items
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        for (segments, bytes) in [
            ("live", report.spool.live_bytes),
            ("kept", report.spool.kept_bytes),
        ] {
            self.spool_bytes
                .get_or_create(&SpoolLabels { segments })
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        self.archive_lag.set(
            report
                .oldest_pending_age
                .map_or(0.0, |age| age.as_millis() as f64 / 1000.0),
        );
        for connector in &report.connectors {
            let labels = DefinitionLabels {
                definition: connector.description.clone(),
            };
            match connector.status {
                ConnectorStatus::Up { .. } => self.connector_up.get_or_create(&labels).set(1),
                ConnectorStatus::Down { .. } => self.connector_up.get_or_create(&labels).set(0),
                ConnectorStatus::NeverSeen | ConnectorStatus::Disabled { .. } => 0,
            };
            if let Some(at) = connector.last_message_at() {
                self.connector_last_message
                    .get_or_create(&labels)
                    .set(at.0 as f64 / 1000.0);
            }
        }
    }
}

/// An open session, counted in `mailjournal_sessions_active` until dropped.
#[derive(Debug)]
pub struct ActiveSession(Gauge);

impl Drop for ActiveSession {
    fn drop(&mut self) {
        self.0.dec();
    }
}
