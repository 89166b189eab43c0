//! Start-up recovery of the live segments: a torn tail of the last one is cut off (it was
//! never acknowledged); data files without a record were never acknowledged either and are
//! removed; records whose data file is missing or differs are reported and their data (if
//! any) quarantined; a damaged frame is set aside when an intact one follows it.
//!
//! Segments are read one frame at a time and every record is handed to the caller as it is
//! found, so memory stays bounded by one frame whatever the size of the spool; a header whose
//! lengths exceed what the server ever writes is damage, never an allocation.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

use crate::frame::{self, Frame};
use crate::segments::{self, Place};
use crate::{Record, sha256_of, sync_dir};

/// What recovery found (the records themselves went to the caller one by one).
#[derive(Debug, Default)]
pub struct Recovery {
    /// Committed records found intact.
    pub committed: u64,
    /// Bytes cut from a torn log tail.
    pub truncated_bytes: u64,
    /// Data files removed because no record committed them.
    pub discarded: Vec<String>,
    /// Records whose data was missing or corrupt (data moved to quarantine), and damaged
    /// stretches of the log (copied to quarantine).
    pub quarantined: Vec<String>,
    /// Live segments and the intact records each holds.
    pub segments: BTreeMap<u64, u64>,
}

/// Recovers every live segment under `root`, handing each intact record to `on_record` in
/// commit order.
pub(crate) fn recover(root: &Path, on_record: &mut dyn FnMut(Record)) -> io::Result<Recovery> {
    let mut recovery = Recovery::default();
    let mut committed_files = HashSet::new();
    let bases = segments::list(root, Place::Live)?;
    for (n, &base) in bases.iter().enumerate() {
        let last = n + 1 == bases.len();
        let mut records = 0;
        let segment = segments::path(root, Place::Live, base);
        let log = OpenOptions::new().read(true).write(true).open(&segment)?;
        let end = recover_segment(root, &log, base, &mut recovery, &mut |record| {
            if !record.inline_data {
                committed_files.insert(record.id.to_string());
            }
            records += 1;
            on_record(record);
        })?;
        let len = log.metadata()?.len();
        if end < len {
            if last {
                // The torn tail of an append that never completed: never acknowledged.
                recovery.truncated_bytes += len - end;
            } else {
                // A segment is sealed only after its last batch was synced: a bad tail here is
                // damage to acknowledged records. Keep the bytes aside before cutting them.
                let name = format!("log-{base:020}-tail-at-{end}");
                set_aside(root, &log, end..len, &name)?;
                recovery.quarantined.push(name);
            }
            log.set_len(end)?;
            log.sync_all()?;
        }
        recovery.segments.insert(base, records);
    }
    let data_dir = Place::Live.data_dir(root);
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

/// Recovers one segment; returns where its last intact (or set-aside) frame ends.
fn recover_segment(
    root: &Path,
    log: &File,
    base: u64,
    recovery: &mut Recovery,
    on_record: &mut dyn FnMut(Record),
) -> io::Result<u64> {
    let len = log.metadata()?.len();
    let mut pos = 0;
    while pos < len {
        if let Some(Frame {
            mut record,
            data,
            next,
        }) = frame::read_frame(log, pos)?
        {
            pos = next;
            let intact = if record.inline_data {
                matches(&record, &mut data.as_slice())
            } else {
                let path = segments::data_file(root, record.id);
                let ok = File::open(&path).is_ok_and(|mut file| matches(&record, &mut file));
                if !ok {
                    let _ = fs::rename(&path, root.join("quarantine").join(record.id.to_string()));
                }
                ok
            };
            if intact {
                record.location.segment = base;
                record.location.log_offset = record.location.log_offset.map(|at| base + at);
                recovery.committed += 1;
                on_record(record);
            } else {
                recovery.quarantined.push(record.id.to_string());
            }
            continue;
        }
        // A frame that does not check out. If a valid frame follows where its lengths say it
        // ends, it was damaged in place (keep it aside, go on); otherwise the rest is a tail.
        let next = match frame::read_head(log, pos)?.map(|head| head.end(pos)) {
            Some(next) if next < len && frame::read_frame(log, next)?.is_some() => next,
            _ => return Ok(pos),
        };
        let name = format!("log-{base:020}-frame-at-{pos}");
        set_aside(root, log, pos..next, &name)?;
        recovery.quarantined.push(name);
        pos = next;
    }
    Ok(pos)
}

/// True when `bytes` are the message `record` describes: its size and SHA-256 (streamed).
fn matches(record: &Record, bytes: &mut impl Read) -> bool {
    sha256_of(bytes).is_ok_and(|(size, sha)| size == record.size && sha == record.sha256)
}

/// Copies bytes `range` of `log` to `quarantine/NAME`, streaming: a damaged tail can be most
/// of a segment, and recovery's memory stays bounded by one frame.
fn set_aside(root: &Path, log: &File, range: Range<u64>, name: &str) -> io::Result<()> {
    let mut from = log;
    from.seek(SeekFrom::Start(range.start))?;
    let mut to = File::create(root.join("quarantine").join(name))?;
    let copied = io::copy(&mut from.take(range.end - range.start), &mut to)?;
    if copied < range.end - range.start {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}
