//! Connector alerts: which status changes to tell ([`ConnectorWatch`], no IO), and the
//! durable outbox that holds each alert until its webhook took it ([`Outbox`]).
//!
//! The outbox lives in `DATA_DIR/alerts/`: `connectors.json` (the status last seen of each
//! definition, by service address) and `pending/` (one file an alert and webhook). An alert
//! is written (and synced) before the status that caused it is recorded, so a crash between
//! the two tells it again rather than never: delivery is at least once, and the alert's `id`
//! lets a receiver drop the repeat.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use mailjournal::queue::{ConnectorStatus, Timestamp};
use mailjournal::status::ConnectorReport;
use serde::{Deserialize, Serialize};

/// One status change, as the JSON document POSTed to a webhook.
///
/// ```json
/// {"id":"journaling@journal.contoso.com/up/1764626400000","definition":"Microsoft 365",
///  "service_email_address":"journaling@journal.contoso.com","old_status":"never_seen",
///  "new_status":"up","last_message_at":"2025-12-01T22:00:00Z","observed_at":"2025-12-01T22:00:04Z"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The same for every telling of one change: service address, new status and the last
    /// message time it follows.
    pub id: String,
    /// The definition's description.
    pub definition: String,
    /// Its service email address.
    pub service_email_address: String,
    /// `never_seen`, `up` or `down` (the names of `status`).
    pub old_status: String,
    /// `up` or `down`.
    pub new_status: String,
    /// When the definition's last message arrived (RFC 3339), if ever.
    pub last_message_at: Option<String>,
    /// When the change was noticed (RFC 3339).
    pub observed_at: String,
}

/// Tells which connector status changes deserve an alert: `up` to `down`, `down` to `up`, and
/// a never-seen connector's first message. A definition seen for the first time (a new
/// watch, or one just configured) sets a baseline without an alert; a change to or from
/// `disabled` is the operator's own doing and is recorded silently.
///
/// ```
/// use mailjournal::queue::{ConnectorStatus, Timestamp};
/// use mailjournal_admin::alert::ConnectorWatch;
/// let mut watch = ConnectorWatch::default();
/// let at = Timestamp(1_000);
/// assert!(watch.observe("j@journal.contoso.com", ConnectorStatus::NeverSeen).is_none());
/// let up = ConnectorStatus::Up { last_message_at: at };
/// assert_eq!(watch.observe("j@journal.contoso.com", up), Some(ConnectorStatus::NeverSeen));
/// assert!(watch.observe("j@journal.contoso.com", up).is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorWatch {
    last: BTreeMap<String, ConnectorStatus>,
}

impl ConnectorWatch {
    /// Records `status` for the definition at `service_address`; returns the old status
    /// when the change is one to tell.
    pub fn observe(
        &mut self,
        service_address: &str,
        status: ConnectorStatus,
    ) -> Option<ConnectorStatus> {
        let old = self.last.insert(service_address.to_owned(), status)?;
        let told = |s: &ConnectorStatus| !matches!(s, ConnectorStatus::Disabled { .. });
        (told(&old)
            && told(&status)
            && old.name() != status.name()
            && status.name() != "never_seen")
            .then_some(old)
    }

    /// The alerts for the changes among `connectors`, observed at `now`.
    pub fn changes(&mut self, connectors: &[ConnectorReport], now: Timestamp) -> Vec<Alert> {
        connectors
            .iter()
            .filter_map(|c| {
                let old = self.observe(&c.service_email_address, c.status)?;
                let last = c.last_message_at();
                Some(Alert {
                    id: format!(
                        "{}/{}/{}",
                        c.service_email_address,
                        c.status.name(),
                        last.map_or(0, |t| t.0)
                    ),
                    definition: c.description.clone(),
                    service_email_address: c.service_email_address.clone(),
                    old_status: old.name().to_owned(),
                    new_status: c.status.name().to_owned(),
                    last_message_at: last.map(Timestamp::rfc3339),
                    observed_at: now.rfc3339(),
                })
            })
            .collect()
    }
}

/// An alert waiting for one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Its order among all alerts (its file's name).
    pub seq: u64,
    /// The webhook it is for (as configured).
    pub webhook_url: String,
    /// The document.
    pub alert: Alert,
}

/// The durable outbox of `DATA_DIR/alerts/`.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    next_seq: u64,
}

impl Outbox {
    /// Opens (or creates) the outbox under `data_dir`; returns it with the watch as last
    /// recorded and every alert still pending, oldest first. A pending file that cannot be
    /// read (cut short by a crash before its sync) is removed: its change is told again,
    /// since the status it followed was not recorded either.
    pub fn open(data_dir: &Path) -> io::Result<(Outbox, ConnectorWatch, Vec<Pending>)> {
        let dir = data_dir.join("alerts");
        fs::create_dir_all(dir.join("pending"))?;
        let watch = match fs::read(dir.join("connectors.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => ConnectorWatch::default(),
            Err(e) => return Err(e),
        };
        let mut pending = Vec::new();
        for entry in fs::read_dir(dir.join("pending"))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path)?;
                continue;
            }
            match fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Pending>(&b).ok())
            {
                Some(p) => pending.push(p),
                None => {
                    tracing::warn!(file = %path.display(), "unreadable pending alert removed");
                    fs::remove_file(&path)?;
                }
            }
        }
        pending.sort_by_key(|p| p.seq);
        let next_seq = pending.last().map_or(0, |p| p.seq + 1);
        Ok((Outbox { dir, next_seq }, watch, pending))
    }

    /// Makes `alerts` durable for every webhook of `webhooks`, then records `watch` (the
    /// statuses that caused them). Returns what to deliver.
    pub fn enqueue(
        &mut self,
        alerts: &[Alert],
        webhooks: &[String],
        watch: &ConnectorWatch,
    ) -> io::Result<Vec<Pending>> {
        let mut made = Vec::new();
        for alert in alerts {
            for url in webhooks {
                let pending = Pending {
                    seq: self.next_seq,
                    webhook_url: url.clone(),
                    alert: alert.clone(),
                };
                self.next_seq += 1;
                let bytes = serde_json::to_vec(&pending).map_err(io::Error::other)?;
                write_durably(&self.pending_path(pending.seq), &bytes)?;
                made.push(pending);
            }
        }
        if !made.is_empty() {
            sync_dir(&self.dir.join("pending"))?;
        }
        let bytes = serde_json::to_vec(watch).map_err(io::Error::other)?;
        write_durably(&self.dir.join("connectors.json"), &bytes)?;
        sync_dir(&self.dir)?;
        Ok(made)
    }

    /// The webhook took the alert: it is forgotten.
    pub fn delivered(&self, seq: u64) -> io::Result<()> {
        match fs::remove_file(self.pending_path(seq)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn pending_path(&self, seq: u64) -> PathBuf {
        self.dir.join("pending").join(format!("{seq:016x}.json"))
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename, so that the file
/// is either the old one or the whole new one.
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailjournal::queue::{Connector, Duration};

    fn report(status: ConnectorStatus) -> ConnectorReport {
        ConnectorReport {
            description: "Microsoft 365".into(),
            service_email_address: "journaling@journal.contoso.com".into(),
            status,
            period_minutes: 1,
        }
    }

    #[test]
    fn every_change_of_a_connector_over_time_is_told_once() {
        let period = Duration::minutes(1);
        let mut watch = ConnectorWatch::default();
        let status_at = |last: Option<u64>, now: u64| {
            Connector::restore(period, false, last.map(Timestamp), Timestamp(now))
                .status_at(Timestamp(now))
        };
        let mut told = Vec::new();
        // Never seen, first message at 10 s, quiet until 200 s, a message at 250 s.
        for (last, now) in [
            (None, 0),
            (None, 5_000),
            (Some(10_000), 10_000),
            (Some(10_000), 60_000),
            (Some(10_000), 70_001),
            (Some(10_000), 200_000),
            (Some(250_000), 250_000),
        ] {
            for alert in watch.changes(&[report(status_at(last, now))], Timestamp(now)) {
                told.push((alert.old_status, alert.new_status, alert.id));
            }
        }
        let told: Vec<(&str, &str, &str)> = told
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        assert_eq!(
            told,
            [
                (
                    "never_seen",
                    "up",
                    "journaling@journal.contoso.com/up/10000"
                ),
                ("up", "down", "journaling@journal.contoso.com/down/10000"),
                ("down", "up", "journaling@journal.contoso.com/up/250000"),
            ]
        );
    }

    #[test]
    fn a_first_sight_and_disabling_are_not_told() {
        let mut watch = ConnectorWatch::default();
        let up = ConnectorStatus::Up {
            last_message_at: Timestamp(1),
        };
        assert!(watch.changes(&[report(up)], Timestamp(2)).is_empty());
        let disabled = ConnectorStatus::Disabled {
            last_message_at: Some(Timestamp(1)),
        };
        assert!(watch.changes(&[report(disabled)], Timestamp(3)).is_empty());
        assert!(watch.changes(&[report(up)], Timestamp(4)).is_empty());
    }

    #[test]
    fn pending_alerts_and_the_watch_survive_a_reopen_and_delivery_forgets_them() {
        let dir = std::env::temp_dir().join(format!("mj-outbox-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (mut outbox, mut watch, pending) = Outbox::open(&dir).unwrap();
        assert!(pending.is_empty());
        watch.changes(&[report(ConnectorStatus::NeverSeen)], Timestamp(0));
        let up = ConnectorStatus::Up {
            last_message_at: Timestamp(7),
        };
        let alerts = watch.changes(&[report(up)], Timestamp(8));
        let hooks = ["http://a/".to_owned(), "http://b/".to_owned()];
        let made = outbox.enqueue(&alerts, &hooks, &watch).unwrap();
        assert_eq!(made.len(), 2);
        // A file cut short by a crash is dropped at the next open.
        fs::write(
            dir.join("alerts/pending/00000000000000ff.json"),
            b"{\"seq\":",
        )
        .unwrap();
        drop(outbox);
        let (outbox, mut reopened, pending) = Outbox::open(&dir).unwrap();
        assert_eq!(pending, made);
        assert_eq!(reopened, watch);
        // What was recorded is not told again.
        assert!(reopened.changes(&[report(up)], Timestamp(9)).is_empty());
        outbox.delivered(made[0].seq).unwrap();
        let (mut outbox, _, pending) = Outbox::open(&dir).unwrap();
        assert_eq!(pending, made[1..]);
        // Numbering goes on after what is pending.
        let again = outbox.enqueue(&alerts, &hooks[..1], &watch).unwrap();
        assert_eq!(again[0].seq, made[1].seq + 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
