//! The spool: every accepted message is on disk before its `250`.
//!
//! Layout under `DATA_DIR/spool/`:
//! * `data/<ID>`: the message bytes as received (after dot-unstuffing), streamed while the
//!   client sends them;
//! * `commit.log`: one CRC-framed JSON record per committed message. The record is the commit
//!   point: a message is accepted once its data file is synced *and* its record is synced.
//! * `quarantine/`: data files whose record does not match them (size or SHA-256).
//!
//! Group commit: sessions sync their own data files concurrently (the file system merges
//! those syncs), then hand the record to one committer thread that appends every waiting
//! record, syncs the log and the data directory once, and answers them all.
//!
//! Recovery on start-up: a torn tail of the log is cut off; data files without a record were
//! never acknowledged and are removed; records whose data file is missing or differs are
//! reported and their data (if any) quarantined.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

/// A queue id: milliseconds since the epoch in the high bits, a counter in the low 20 bits;
/// printed as 16 upper-case hex digits. Unique and ordered by arrival within one spool.
pub(crate) fn format_id(id: u64) -> String {
    format!("{id:016X}")
}

/// Parses a printed queue id.
pub(crate) fn parse_id(text: &str) -> Option<u64> {
    (text.len() == 16)
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}

/// What is stored with each message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) id: String,
    pub(crate) received_at: u64,
    pub(crate) peer: String,
    pub(crate) helo: String,
    pub(crate) tls_version: Option<String>,
    pub(crate) tls_cipher: Option<String>,
    pub(crate) authenticated: Option<String>,
    pub(crate) mail_from: Option<String>,
    pub(crate) recipients: Vec<String>,
    /// The journal definition (index in the configuration) of each recipient.
    pub(crate) journals: Vec<usize>,
    pub(crate) size: u64,
    pub(crate) sha256: String,
}

/// Why a commit failed: the client gets a temporary error and retries.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// Not enough space.
    StorageFull,
    /// Any other IO failure.
    Io(io::Error),
}

impl From<io::Error> for CommitError {
    fn from(e: io::Error) -> Self {
        if e.raw_os_error() == Some(28) {
            CommitError::StorageFull
        } else {
            CommitError::Io(e)
        }
    }
}

/// A message being received.
pub(crate) struct SpoolWriter {
    id: u64,
    path: PathBuf,
    file: BufWriter<File>,
    hasher: Sha256,
    size: u64,
}

impl SpoolWriter {
    /// The queue id this message will have.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Appends content.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.file.write_all(bytes)
    }

    /// Flushes and syncs the data file; returns its size and SHA-256 (hex).
    fn finish(self) -> io::Result<(u64, String)> {
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        Ok((self.size, hex(&self.hasher.finalize())))
    }

    /// Drops a message that will not be committed.
    pub(crate) fn discard(self) {
        drop(self.file);
        let _ = fs::remove_file(&self.path);
    }
}

struct CommitRequest {
    record: Record,
    done: oneshot::Sender<Result<(), String>>,
}

/// The spool of one data directory.
pub(crate) struct Spool {
    data_dir: PathBuf,
    next_id: AtomicU64,
    committer: mpsc::Sender<CommitRequest>,
    /// Bytes that must stay free; below that, messages get `452 4.3.1`.
    reserve_bytes: u64,
}

/// What recovery found.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// Every committed record, in commit order.
    pub(crate) records: Vec<Record>,
    /// Bytes cut from a torn log tail.
    pub(crate) truncated_bytes: u64,
    /// Data files removed because no record committed them.
    pub(crate) discarded: Vec<String>,
    /// Records whose data was missing or corrupt (data moved to quarantine).
    pub(crate) quarantined: Vec<String>,
}

impl Spool {
    /// Opens (creating) the spool under `dir`, recovers it, and starts the committer thread.
    pub(crate) fn open(dir: &Path, reserve_bytes: u64) -> io::Result<(Spool, Recovery)> {
        let root = dir.join("spool");
        let data_dir = root.join("data");
        fs::create_dir_all(&data_dir)?;
        fs::create_dir_all(root.join("quarantine"))?;
        let log_path = root.join("commit.log");
        let recovery = recover(&root, &log_path)?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        sync_dir(&root)?;
        let (tx, rx) = mpsc::channel::<CommitRequest>();
        let dir_for_thread = data_dir.clone();
        std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || committer(rx, log, dir_for_thread))?;
        let last = recovery
            .records
            .iter()
            .filter_map(|r| parse_id(&r.id))
            .max()
            .unwrap_or(0);
        Ok((
            Spool {
                data_dir,
                next_id: AtomicU64::new(last + 1),
                committer: tx,
                reserve_bytes,
            },
            recovery,
        ))
    }

    fn new_id(&self) -> u64 {
        let now = crate::clock::now().0 << 20;
        let mut current = self.next_id.load(Ordering::Relaxed);
        loop {
            let id = current.max(now);
            match self.next_id.compare_exchange_weak(
                current,
                id + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return id,
                Err(seen) => current = seen,
            }
        }
    }

    /// True when the spool's file system has less free space than the reserve.
    pub(crate) fn low_on_space(&self) -> bool {
        rustix::fs::statvfs(&self.data_dir)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize) < self.reserve_bytes)
            .unwrap_or(false)
    }

    /// Starts a message.
    pub(crate) fn begin(&self) -> io::Result<SpoolWriter> {
        let id = self.new_id();
        let path = self.data_dir.join(format_id(id));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(SpoolWriter {
            id,
            path,
            file: BufWriter::with_capacity(64 * 1024, file),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Makes a message durable. Returns only once its data and record are synced.
    pub(crate) async fn commit(
        &self,
        writer: SpoolWriter,
        mut record: Record,
    ) -> Result<Record, CommitError> {
        let path = writer.path.clone();
        let finished = tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|e| CommitError::Io(io::Error::other(e)))?;
        let (size, sha256) = match finished {
            Ok(done) => done,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e.into());
            }
        };
        record.size = size;
        record.sha256 = sha256;
        let (done, wait) = oneshot::channel();
        self.committer
            .send(CommitRequest {
                record: record.clone(),
                done,
            })
            .map_err(|_| CommitError::Io(io::Error::other("committer stopped")))?;
        match wait.await {
            Ok(Ok(())) => Ok(record),
            Ok(Err(e)) => {
                let _ = fs::remove_file(&path);
                Err(CommitError::Io(io::Error::other(e)))
            }
            Err(_) => Err(CommitError::Io(io::Error::other("committer stopped"))),
        }
    }
}

/// The message bytes of a committed item, as received.
pub(crate) fn read_data(data_dir: &Path, id: &str) -> io::Result<Vec<u8>> {
    fs::read(data_dir.join("spool").join("data").join(id))
}

fn committer(rx: mpsc::Receiver<CommitRequest>, mut log: File, data_dir: PathBuf) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut frames = Vec::new();
        for request in &batch {
            frame(&request.record, &mut frames);
        }
        let result = log
            .write_all(&frames)
            .and_then(|()| log.sync_data())
            .and_then(|()| sync_dir(&data_dir))
            .map_err(|e| e.to_string());
        if result.is_err() {
            // The log's state is unknown: later appends could follow a torn record, which
            // recovery would cut together with them. Stop accepting.
            for request in batch {
                let _ = request.done.send(result.clone());
            }
            while let Ok(request) = rx.recv() {
                let _ = request.done.send(Err("spool log failed earlier".into()));
            }
            return;
        }
        for request in batch {
            let _ = request.done.send(Ok(()));
        }
    }
}

/// `[len u32 LE][crc32 u32 LE][json]`.
fn frame(record: &Record, out: &mut Vec<u8>) {
    let json = serde_json::to_vec(record).unwrap_or_default();
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out.extend_from_slice(&json);
}

fn recover(root: &Path, log_path: &Path) -> io::Result<Recovery> {
    let mut recovery = Recovery::default();
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(log_path) {
        f.read_to_end(&mut bytes)?;
    }
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        let crc = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]);
        let Some(json) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32fast::hash(json) != crc {
            break;
        }
        let Ok(record) = serde_json::from_slice::<Record>(json) else {
            break;
        };
        recovery.records.push(record);
        pos += 8 + len;
    }
    if pos < bytes.len() {
        recovery.truncated_bytes = (bytes.len() - pos) as u64;
        let f = OpenOptions::new().write(true).open(log_path)?;
        f.set_len(pos as u64)?;
        let mut f = f;
        f.seek(SeekFrom::End(0))?;
        f.sync_all()?;
    }
    let data_dir = root.join("data");
    let committed: std::collections::HashSet<&str> =
        recovery.records.iter().map(|r| r.id.as_str()).collect();
    for entry in fs::read_dir(&data_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !committed.contains(name.as_str()) {
            fs::remove_file(entry.path())?;
            recovery.discarded.push(name);
        }
    }
    let mut good = Vec::with_capacity(recovery.records.len());
    for record in std::mem::take(&mut recovery.records) {
        let path = data_dir.join(&record.id);
        let intact = fs::read(&path).is_ok_and(|data| {
            data.len() as u64 == record.size && hex(&Sha256::digest(&data)) == record.sha256
        });
        if intact {
            good.push(record);
        } else {
            let _ = fs::rename(&path, root.join("quarantine").join(&record.id));
            recovery.quarantined.push(record.id.clone());
        }
    }
    recovery.records = good;
    sync_dir(&data_dir)?;
    Ok(recovery)
}

/// Makes a directory's entries durable (new and removed files).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("journal-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record(id: u64) -> Record {
        Record {
            id: format_id(id),
            received_at: 0,
            peer: "127.0.0.1".into(),
            helo: "x".into(),
            tls_version: None,
            tls_cipher: None,
            authenticated: None,
            mail_from: None,
            recipients: vec!["journaling@journal.contoso.com".into()],
            journals: vec![0],
            size: 0,
            sha256: String::new(),
        }
    }

    #[tokio::test]
    async fn commit_then_recover_then_torn_tail_and_orphans() {
        let dir = temp_dir("recover");
        let committed_id;
        {
            let (spool, recovery) = Spool::open(&dir, 0).unwrap();
            assert!(recovery.records.is_empty());
            let mut w = spool.begin().unwrap();
            committed_id = w.id();
            w.write(b"Subject: a\r\n\r\nbody\r\n").unwrap();
            let r = spool.commit(w, record(committed_id)).await.unwrap();
            assert_eq!(r.size, 20);
            // An unacknowledged message: data written, never committed.
            let mut orphan = spool.begin().unwrap();
            orphan.write(b"partial").unwrap();
            orphan.file.flush().unwrap();
            std::mem::forget(orphan);
        }
        // A torn record at the end of the log.
        let log = dir.join("spool/commit.log");
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (_spool, recovery) = Spool::open(&dir, 0).unwrap();
        assert_eq!(recovery.records.len(), 1);
        assert_eq!(recovery.records[0].id, format_id(committed_id));
        assert_eq!(recovery.truncated_bytes, 7);
        assert_eq!(recovery.discarded.len(), 1);
        assert_eq!(
            read_data(&dir, &format_id(committed_id)).unwrap(),
            b"Subject: a\r\n\r\nbody\r\n"
        );
    }

    #[tokio::test]
    async fn corrupt_data_is_quarantined() {
        let dir = temp_dir("corrupt");
        let id;
        {
            let (spool, _) = Spool::open(&dir, 0).unwrap();
            let mut w = spool.begin().unwrap();
            id = format_id(w.id());
            w.write(b"hello").unwrap();
            let r = record(w.id());
            spool.commit(w, r).await.unwrap();
        }
        fs::write(dir.join("spool/data").join(&id), b"HELLO").unwrap();
        let (_spool, recovery) = Spool::open(&dir, 0).unwrap();
        assert!(recovery.records.is_empty());
        assert_eq!(recovery.quarantined, std::slice::from_ref(&id));
        assert!(dir.join("spool/quarantine").join(&id).exists());
    }

    #[test]
    fn ids_round_trip() {
        assert_eq!(
            parse_id(&format_id(0x0123_4567_89AB_CDEF)),
            Some(0x0123_4567_89AB_CDEF)
        );
        assert_eq!(parse_id("xyz"), None);
    }
}
