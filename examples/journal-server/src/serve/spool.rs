//! The spool: every accepted message is on disk before its `250`.
//!
//! Layout under `DATA_DIR/spool/`:
//! * `commit.log`: one CRC-framed record per committed message: its metadata (JSON) and, for
//!   a message up to [`INLINE_LIMIT`], its bytes. The record is the commit point: a message is
//!   accepted once its record (and, for a large message, its data file) is synced.
//! * `data/<ID>`: the bytes of a larger message, streamed to disk while the client sends them,
//!   so memory per connection stays bounded whatever the size;
//! * `quarantine/`: data files whose record does not match them (size or SHA-256).
//!
//! Group commit: one committer thread appends every waiting record in one write and syncs the
//! log once for all of them (and the data directory once, when the batch holds large
//! messages, whose own files their sessions synced concurrently before). Concurrent sessions
//! therefore share one `fdatasync` instead of paying one each.
//!
//! Recovery on start-up: a torn tail of the log is cut off; data files without a record were
//! never acknowledged and are removed; records whose data file is missing or differs are
//! reported and their data (if any) quarantined. The log is read one frame at a time and
//! every record is handed to the caller as it is found, so memory stays bounded by one frame
//! whatever the size of the log; a header whose lengths exceed what the server ever writes is
//! damage, never an allocation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

/// Messages up to this size travel inside their commit record (one shared sync); larger ones
/// are streamed to a file of their own.
pub(crate) const INLINE_LIMIT: usize = 1024 * 1024;

/// The longest record metadata (JSON) read back from the log: far above what a transaction
/// with the session's recipient limit produces, and a bound on what a damaged header can make
/// recovery allocate.
const MAX_RECORD_JSON: usize = 1024 * 1024;

/// A frame's header: JSON length, data length, CRC-32 of both.
const FRAME_HEAD: usize = 12;

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
    /// True when the bytes are inside the commit record rather than in a data file.
    #[serde(default)]
    pub(crate) inline_data: bool,
    /// Where the record starts in the commit log when the bytes are inline in it.
    #[serde(skip)]
    pub(crate) log_offset: Option<u64>,
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

/// Where a message's bytes go while it is received.
enum Sink {
    /// Small so far: kept in memory, to travel inside the commit record.
    Memory(Vec<u8>),
    /// Over [`INLINE_LIMIT`]: streamed to its own data file.
    File(BufWriter<File>),
}

/// A message being received.
pub(crate) struct SpoolWriter {
    id: u64,
    path: PathBuf,
    sink: Sink,
    hasher: Sha256,
    size: u64,
}

impl SpoolWriter {
    /// The queue id this message will have.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Appends content, moving to a file once the message outgrows [`INLINE_LIMIT`].
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        match &mut self.sink {
            Sink::Memory(buffer) if buffer.len() + bytes.len() <= INLINE_LIMIT => {
                buffer.extend_from_slice(bytes);
                Ok(())
            }
            Sink::Memory(buffer) => {
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&self.path)?;
                let mut file = BufWriter::with_capacity(64 * 1024, file);
                file.write_all(buffer)?;
                file.write_all(bytes)?;
                self.sink = Sink::File(file);
                Ok(())
            }
            Sink::File(file) => file.write_all(bytes),
        }
    }

    /// Drops a message that will not be committed.
    pub(crate) fn discard(self) {
        if let Sink::File(file) = self.sink {
            drop(file);
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A framed record on its way to the committer: the session serialises and checksums it, so
/// the committer only appends and syncs.
struct CommitRequest {
    head: [u8; FRAME_HEAD],
    json: Vec<u8>,
    /// The message bytes, when they travel inside the record; handed back once committed.
    inline: Option<Vec<u8>>,
    done: oneshot::Sender<CommitOutcome>,
}

/// The committer's answer: the record's offset in the log and the inline bytes back, or why
/// the log could not take it.
type CommitOutcome = Result<(u64, Option<Vec<u8>>), String>;

/// The spool of one data directory.
pub(crate) struct Spool {
    data_dir: PathBuf,
    next_id: AtomicU64,
    committer: mpsc::Sender<CommitRequest>,
    /// Bytes that must stay free; below that, messages get `452 4.3.1`.
    reserve_bytes: u64,
    /// The last free-space check, refreshed at most once a second.
    space: std::sync::Mutex<(Option<std::time::Instant>, bool)>,
}

/// What recovery found (the records themselves went to the caller one by one).
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// Committed records found intact.
    pub(crate) committed: u64,
    /// Bytes cut from a torn log tail.
    pub(crate) truncated_bytes: u64,
    /// Data files removed because no record committed them.
    pub(crate) discarded: Vec<String>,
    /// Records whose data was missing or corrupt (data moved to quarantine).
    pub(crate) quarantined: Vec<String>,
}

impl Spool {
    /// Opens (creating) the spool under `dir`, recovers it, handing every intact committed
    /// record to `on_record` in commit order, and starts the committer thread.
    pub(crate) fn open(
        dir: &Path,
        reserve_bytes: u64,
        on_record: &mut dyn FnMut(Record),
    ) -> io::Result<(Spool, Recovery)> {
        let root = dir.join("spool");
        let data_dir = root.join("data");
        fs::create_dir_all(&data_dir)?;
        fs::create_dir_all(root.join("quarantine"))?;
        let log_path = log_path(dir);
        let mut last = 0;
        let recovery = recover(&root, &log_path, &mut |record: Record| {
            last = last.max(parse_id(&record.id).unwrap_or(0));
            on_record(record);
        })?;
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
        Ok((
            Spool {
                data_dir,
                next_id: AtomicU64::new(last + 1),
                committer: tx,
                reserve_bytes,
                space: std::sync::Mutex::new((None, false)),
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

    /// True when the spool's file system has less free space than the reserve (checked at
    /// most once a second: sessions ask before every command batch).
    pub(crate) fn low_on_space(&self) -> bool {
        let Ok(mut space) = self.space.lock() else {
            return false;
        };
        if space
            .0
            .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1))
        {
            let low = rustix::fs::statvfs(&self.data_dir)
                .map(|s| s.f_bavail.saturating_mul(s.f_frsize) < self.reserve_bytes)
                .unwrap_or(false);
            *space = (Some(std::time::Instant::now()), low);
        }
        space.1
    }

    /// Starts a message.
    pub(crate) fn begin(&self) -> io::Result<SpoolWriter> {
        let id = self.new_id();
        let path = self.data_dir.join(format_id(id));
        Ok(SpoolWriter {
            id,
            path,
            sink: Sink::Memory(Vec::new()),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Makes a message durable. Returns only once its data and record are synced, with the
    /// record and, for a message that travelled inside it, its bytes (so that the caller can
    /// hand them on instead of anyone reading them back).
    pub(crate) async fn commit(
        &self,
        writer: SpoolWriter,
        mut record: Record,
    ) -> Result<(Record, Option<Vec<u8>>), CommitError> {
        let SpoolWriter {
            path,
            sink,
            hasher,
            size,
            ..
        } = writer;
        record.size = size;
        record.sha256 = hex(&hasher.finalize());
        let inline = match sink {
            Sink::Memory(buffer) => Some(buffer),
            Sink::File(file) => {
                let synced = tokio::task::spawn_blocking(move || -> io::Result<()> {
                    let file = file.into_inner().map_err(|e| e.into_error())?;
                    file.sync_data()
                })
                .await
                .map_err(|e| CommitError::Io(io::Error::other(e)))?;
                if let Err(e) = synced {
                    let _ = fs::remove_file(&path);
                    return Err(e.into());
                }
                None
            }
        };
        record.inline_data = inline.is_some();
        let json = serde_json::to_vec(&record).map_err(io::Error::other)?;
        if json.len() > MAX_RECORD_JSON {
            // Recovery would take a longer record for damage: never write one.
            let _ = fs::remove_file(&path);
            return Err(CommitError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "commit record metadata too large",
            )));
        }
        let head = frame_head(&json, inline.as_deref().unwrap_or_default());
        let (done, wait) = oneshot::channel();
        self.committer
            .send(CommitRequest {
                head,
                json,
                inline,
                done,
            })
            .map_err(|_| CommitError::Io(io::Error::other("committer stopped")))?;
        match wait.await {
            Ok(Ok((offset, inline))) => {
                record.log_offset = record.inline_data.then_some(offset);
                Ok((record, inline))
            }
            Ok(Err(e)) => {
                let _ = fs::remove_file(&path);
                Err(CommitError::Io(io::Error::other(e)))
            }
            Err(_) => Err(CommitError::Io(io::Error::other("committer stopped"))),
        }
    }
}

/// The message bytes of a committed item, as received: from its record in the commit log
/// (at `log_offset` when known, else found by a scan) or from its data file.
pub(crate) fn read_data(data_dir: &Path, id: &str, log_offset: Option<u64>) -> io::Result<Vec<u8>> {
    if let Some(offset) = log_offset {
        return read_inline(&File::open(log_path(data_dir))?, id, offset);
    }
    match fs::read(data_dir.join("spool").join("data").join(id)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let log = File::open(log_path(data_dir))?;
            match find_inline(&log, id)? {
                Some(offset) => read_inline(&log, id, offset),
                None => Err(e),
            }
        }
        other => other,
    }
}

/// The commit log of a data directory.
pub(crate) fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("spool").join("commit.log")
}

/// The message bytes inside the commit record at `offset` of an open commit log, checked
/// against the record's CRC and id.
pub(crate) fn read_inline(log: &File, id: &str, offset: u64) -> io::Result<Vec<u8>> {
    match read_frame(log, offset)? {
        Some(frame) if frame.record.id == id && frame.record.inline_data => Ok(frame.data),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "commit record does not match",
        )),
    }
}

/// Where the record of inline item `id` starts, found by walking the records' headers and
/// metadata (not their data) from the start of the log.
fn find_inline(log: &File, id: &str) -> io::Result<Option<u64>> {
    let mut pos = 0;
    while let Some(head) = read_head(log, pos)? {
        let mut json = vec![0u8; head.json_len];
        if !read_exact_or_eof(log, &mut json, pos + FRAME_HEAD as u64)? {
            return Ok(None);
        }
        if let Ok(record) = serde_json::from_slice::<Record>(&json)
            && record.id == id
            && record.inline_data
        {
            return Ok(Some(pos));
        }
        pos = head.end(pos);
    }
    Ok(None)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// A frame header whose lengths are within what the server writes.
struct FrameHead {
    json_len: usize,
    data_len: usize,
    crc: u32,
}

impl FrameHead {
    /// Where the next frame starts, for a frame starting at `pos`.
    fn end(&self, pos: u64) -> u64 {
        pos + (FRAME_HEAD + self.json_len + self.data_len) as u64
    }
}

/// One intact frame read back from the log.
struct Frame {
    record: Record,
    /// The inline message bytes (empty for a message in its own data file).
    data: Vec<u8>,
    /// Where the next frame starts.
    next: u64,
}

/// Fills `buf` from `offset`; false when the file ends first.
fn read_exact_or_eof(log: &File, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    match log.read_exact_at(buf, offset) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The header at `pos`, if the file holds one there with plausible lengths.
fn read_head(log: &File, pos: u64) -> io::Result<Option<FrameHead>> {
    let mut head = [0u8; FRAME_HEAD];
    if !read_exact_or_eof(log, &mut head, pos)? {
        return Ok(None);
    }
    let (json_len, data_len) = (u32_at(&head, 0) as usize, u32_at(&head, 4) as usize);
    Ok(
        (json_len <= MAX_RECORD_JSON && data_len <= INLINE_LIMIT).then_some(FrameHead {
            json_len,
            data_len,
            crc: u32_at(&head, 8),
        }),
    )
}

/// The frame at `pos`, if it is whole and checks out (CRC, then metadata).
fn read_frame(log: &File, pos: u64) -> io::Result<Option<Frame>> {
    let Some(head) = read_head(log, pos)? else {
        return Ok(None);
    };
    let mut body = vec![0u8; head.json_len + head.data_len];
    if !read_exact_or_eof(log, &mut body, pos + FRAME_HEAD as u64)?
        || crc32fast::hash(&body) != head.crc
    {
        return Ok(None);
    }
    let Ok(mut record) = serde_json::from_slice::<Record>(&body[..head.json_len]) else {
        return Ok(None);
    };
    if record.inline_data {
        record.log_offset = Some(pos);
    }
    body.drain(..head.json_len);
    Ok(Some(Frame {
        record,
        data: body,
        next: head.end(pos),
    }))
}

fn committer(rx: mpsc::Receiver<CommitRequest>, mut log: File, data_dir: PathBuf) {
    let mut end = log.metadata().map_or(0, |m| m.len());
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut offsets = Vec::with_capacity(batch.len());
        let mut slices = Vec::with_capacity(batch.len() * 3);
        let mut at = end;
        for request in &batch {
            offsets.push(at);
            let data = request.inline.as_deref().unwrap_or_default();
            at += (FRAME_HEAD + request.json.len() + data.len()) as u64;
            // Empty slices are left out: a write of nothing but empty slices would say 0.
            slices.extend(
                [&request.head[..], &request.json, data]
                    .into_iter()
                    .filter(|part| !part.is_empty())
                    .map(io::IoSlice::new),
            );
        }
        // New data files are directory entries: their directory is synced with the log.
        let any_files = batch.iter().any(|r| r.inline.is_none());
        let result = append_all(&mut log, &mut slices)
            .and_then(|()| log.sync_data())
            .and_then(|()| {
                if any_files {
                    sync_dir(&data_dir)
                } else {
                    Ok(())
                }
            })
            .map_err(|e| e.to_string());
        drop(slices);
        if let Err(e) = result {
            // The log's state is unknown: later appends could follow a torn record, which
            // recovery would cut together with them. Stop accepting.
            for request in batch {
                let _ = request.done.send(Err(e.clone()));
            }
            while let Ok(request) = rx.recv() {
                let _ = request.done.send(Err("spool log failed earlier".into()));
            }
            return;
        }
        end = at;
        for (request, offset) in batch.into_iter().zip(offsets) {
            let _ = request.done.send(Ok((offset, request.inline)));
        }
    }
}

/// Appends every slice, in order, with as few system calls as the kernel allows (the frames
/// of a batch go out in one `writev`, without being copied together first).
fn append_all(log: &mut File, mut slices: &mut [io::IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match log.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A frame's header: `[json len u32][data len u32][crc32 of json and data u32]`,
/// little-endian; the JSON and the data follow it.
fn frame_head(json: &[u8], data: &[u8]) -> [u8; FRAME_HEAD] {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(json);
    hasher.update(data);
    let mut head = [0u8; FRAME_HEAD];
    head[0..4].copy_from_slice(&(json.len() as u32).to_le_bytes());
    head[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
    head[8..12].copy_from_slice(&hasher.finalize().to_le_bytes());
    head
}

fn recover(
    root: &Path,
    log_path: &Path,
    on_record: &mut dyn FnMut(Record),
) -> io::Result<Recovery> {
    let mut recovery = Recovery::default();
    let data_dir = root.join("data");
    let mut committed_files = std::collections::HashSet::new();
    let log = match OpenOptions::new().read(true).write(true).open(log_path) {
        Ok(log) => Some(log),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let len = match &log {
        Some(log) => log.metadata()?.len(),
        None => 0,
    };
    let mut pos = 0;
    while let Some(log) = log.as_ref().filter(|_| pos < len) {
        if let Some(Frame { record, data, next }) = read_frame(log, pos)? {
            pos = next;
            let intact = if record.inline_data {
                data.len() as u64 == record.size && hex(&Sha256::digest(&data)) == record.sha256
            } else {
                committed_files.insert(record.id.clone());
                let path = data_dir.join(&record.id);
                let ok = fs::read(&path).is_ok_and(|d| {
                    d.len() as u64 == record.size && hex(&Sha256::digest(&d)) == record.sha256
                });
                if !ok {
                    let _ = fs::rename(&path, root.join("quarantine").join(&record.id));
                }
                ok
            };
            if intact {
                recovery.committed += 1;
                on_record(record);
            } else {
                recovery.quarantined.push(record.id.clone());
            }
            continue;
        }
        // A frame that does not check out. If a valid frame follows where its lengths say it
        // ends, it was damaged in place (keep it aside, go on); otherwise it is the torn tail
        // of an append that never completed.
        let next = match read_head(log, pos)?.map(|head| head.end(pos)) {
            Some(next) if next < len && read_frame(log, next)?.is_some() => Some(next),
            _ => None,
        };
        let Some(next) = next else { break };
        let mut damaged = vec![0u8; (next - pos) as usize];
        log.read_exact_at(&mut damaged, pos)?;
        let name = format!("log-frame-at-{pos}");
        fs::write(root.join("quarantine").join(&name), &damaged)?;
        recovery.quarantined.push(name);
        pos = next;
    }
    if let Some(mut log) = log.filter(|_| pos < len) {
        // Everything from the first frame that is neither valid nor followed by one is the
        // torn tail of an append that never completed: it was never acknowledged.
        recovery.truncated_bytes = len - pos;
        log.set_len(pos)?;
        log.seek(SeekFrom::End(0))?;
        log.sync_all()?;
    }
    for entry in fs::read_dir(&data_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !committed_files.contains(&name) {
            fs::remove_file(entry.path())?;
            recovery.discarded.push(name);
        }
    }
    sync_dir(&data_dir)?;
    Ok(recovery)
}

/// Makes a directory's entries durable (new and removed files).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
impl Record {
    /// A record for one journal address, as tests of the spool and the pipeline need it.
    pub(crate) fn for_test(id: u64, received_at: u64) -> Record {
        Record {
            id: format_id(id),
            received_at,
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
            inline_data: false,
            log_offset: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        crate::testing::temp_dir(&format!("spool-{name}"))
    }

    fn record(id: u64) -> Record {
        Record::for_test(id, 0)
    }

    /// Opens the spool, collecting the records recovery hands over.
    fn open(dir: &Path) -> (Spool, Recovery, Vec<Record>) {
        let mut records = Vec::new();
        let (spool, recovery) = Spool::open(dir, 0, &mut |r| records.push(r)).unwrap();
        (spool, recovery, records)
    }

    #[tokio::test]
    async fn commit_then_recover_then_torn_tail_and_orphans() {
        let dir = temp_dir("recover");
        let committed_id;
        {
            let (spool, recovery, records) = open(&dir);
            assert!(records.is_empty());
            assert_eq!(recovery.committed, 0);
            let mut w = spool.begin().unwrap();
            committed_id = w.id();
            w.write(b"Subject: a\r\n\r\nbody\r\n").unwrap();
            let (r, _) = spool.commit(w, record(committed_id)).await.unwrap();
            assert_eq!(r.size, 20);
            // An unacknowledged large message: its data file written, never committed.
            let mut orphan = spool.begin().unwrap();
            orphan.write(&vec![b'x'; INLINE_LIMIT + 1]).unwrap();
            if let Sink::File(file) = &mut orphan.sink {
                file.flush().unwrap();
            }
            std::mem::forget(orphan);
        }
        // A torn record at the end of the log.
        let log = dir.join("spool/commit.log");
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (_spool, recovery, records) = open(&dir);
        assert_eq!((recovery.committed, records.len()), (1, 1));
        assert_eq!(records[0].id, format_id(committed_id));
        assert_eq!(recovery.truncated_bytes, 7);
        assert_eq!(recovery.discarded.len(), 1);
        let id = format_id(committed_id);
        assert_eq!(
            read_data(&dir, &id, None).unwrap(),
            b"Subject: a\r\n\r\nbody\r\n"
        );
        let offset = records[0].log_offset;
        assert!(offset.is_some(), "a small message is inline in its record");
        assert_eq!(
            read_data(&dir, &id, offset).unwrap(),
            b"Subject: a\r\n\r\nbody\r\n"
        );
    }

    #[tokio::test]
    async fn a_damaged_frame_mid_log_is_set_aside_not_truncated() {
        let dir = temp_dir("midlog");
        let mut ids = Vec::new();
        {
            let (spool, _, _) = open(&dir);
            for body in [&b"first message"[..], b"second message"] {
                let mut w = spool.begin().unwrap();
                w.write(body).unwrap();
                let r = record(w.id());
                ids.push(spool.commit(w, r).await.unwrap().0.id);
            }
        }
        let log = dir.join("spool/commit.log");
        let mut bytes = fs::read(&log).unwrap();
        let first_len = 12 + u32_at(&bytes, 0) as usize + u32_at(&bytes, 4) as usize;
        bytes[first_len - 1] ^= 0xff; // flip the last data byte of the first frame
        fs::write(&log, &bytes).unwrap();
        let (_spool, recovery, records) = open(&dir);
        assert_eq!(recovery.truncated_bytes, 0);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].id, ids[1]);
        assert_eq!(recovery.quarantined, ["log-frame-at-0"]);
    }

    #[tokio::test]
    async fn a_header_claiming_gigabytes_is_a_torn_tail_not_an_allocation() {
        let dir = temp_dir("huge-header");
        let id = {
            let (spool, _, _) = open(&dir);
            let mut w = spool.begin().unwrap();
            w.write(b"kept").unwrap();
            let r = record(w.id());
            spool.commit(w, r).await.unwrap().0.id
        };
        let log = dir.join("spool/commit.log");
        let kept = fs::metadata(&log).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        // json and data lengths of 4 GiB - 1 each, then a few bytes.
        f.write_all(&[0xff; 8]).unwrap();
        f.write_all(&[0; 20]).unwrap();
        drop(f);
        let (_spool, recovery, records) = open(&dir);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].id, id);
        assert_eq!(recovery.truncated_bytes, 28);
        assert_eq!(fs::metadata(&log).unwrap().len(), kept);
    }

    #[tokio::test]
    async fn corrupt_data_is_quarantined() {
        let dir = temp_dir("corrupt");
        let id;
        {
            let (spool, _, _) = open(&dir);
            let mut w = spool.begin().unwrap();
            id = format_id(w.id());
            w.write(&vec![b'h'; INLINE_LIMIT + 10]).unwrap();
            let r = record(w.id());
            spool.commit(w, r).await.unwrap();
        }
        fs::write(dir.join("spool/data").join(&id), b"HELLO").unwrap();
        let (_spool, recovery, records) = open(&dir);
        assert!(records.is_empty());
        assert_eq!(recovery.quarantined, std::slice::from_ref(&id));
        assert!(dir.join("spool/quarantine").join(&id).exists());
    }

    /// A commit log and the bytes of each message it commits, by id.
    type Template = (Vec<u8>, std::collections::HashMap<String, Vec<u8>>);

    /// A commit log holding a few committed messages, built once.
    fn template_log() -> &'static Template {
        static TEMPLATE: std::sync::OnceLock<Template> = std::sync::OnceLock::new();
        TEMPLATE.get_or_init(|| {
            let dir = temp_dir("template");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let mut messages = std::collections::HashMap::new();
            {
                let (spool, _, _) = open(&dir);
                for n in 0..6usize {
                    let body: Vec<u8> = (0..n * 97).map(|i| (i * 31 + n) as u8).collect();
                    let mut w = spool.begin().unwrap();
                    w.write(&body).unwrap();
                    let r = record(w.id());
                    let (committed, _) = runtime.block_on(spool.commit(w, r)).unwrap();
                    messages.insert(committed.id, body);
                }
            }
            let log = fs::read(dir.join("spool/commit.log")).unwrap();
            let _ = fs::remove_dir_all(&dir);
            (log, messages)
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Whatever happened to the log (bytes changed, a tail cut, garbage appended),
        /// recovery does not panic, hands over only records that were committed, each with
        /// exactly its bytes, and leaves a log that recovers the same way again with nothing
        /// more to cut.
        #[test]
        fn recovery_hands_over_only_intact_committed_records(
            changes in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 0..6),
            keep in proptest::prelude::any::<proptest::sample::Index>(),
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let (log, messages) = template_log();
            let mut damaged = log.clone();
            for (at, byte) in changes {
                let at = at.index(damaged.len());
                damaged[at] = byte;
            }
            damaged.truncate(keep.index(damaged.len() + 1));
            damaged.extend_from_slice(&garbage);
            let dir = temp_dir("damaged");
            fs::create_dir_all(dir.join("spool/data")).unwrap();
            fs::write(dir.join("spool/commit.log"), &damaged).unwrap();
            let first = {
                let (_spool, _, records) = open(&dir);
                records
            };
            for record in &first {
                let expected = messages.get(&record.id);
                proptest::prop_assert!(expected.is_some(), "{} was never committed", record.id);
                let bytes = read_data(&dir, &record.id, record.log_offset).unwrap();
                proptest::prop_assert_eq!(Some(&bytes), expected);
            }
            let (_spool, again, records) = open(&dir);
            proptest::prop_assert_eq!(again.truncated_bytes, 0);
            let ids = |rs: &[Record]| rs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
            proptest::prop_assert_eq!(ids(&records), ids(&first));
            let _ = fs::remove_dir_all(&dir);
        }
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
