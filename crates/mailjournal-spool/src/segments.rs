//! The commit log as a series of segments, so that start-up reads only what may still need
//! work, however long the server has run.
//!
//! Layout under `DATA_DIR/spool/`:
//! * `log/<BASE>.log`: live segments. `BASE` (20 digits) is the segment's first byte in the
//!   log as a whole, so a record keeps one offset for life whichever file holds it. The last
//!   live segment is the one the committer appends to; it starts a new one past
//!   [`SpoolOptions::segment_bytes`](crate::SpoolOptions).
//! * `kept/<BASE>.log` and `kept/data/<ID>`: retired segments and the data files of their
//!   large messages. A sealed segment is retired once every record in it is settled in the
//!   archive store (and that is durable): recovery no longer reads it, `get --as-received`
//!   still does.
//!
//! A retirement moves the data files first and the segment last, syncing each directory in
//! between: a crash in the middle leaves a live segment whose data files are already kept,
//! which readers and recovery look for in both places.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use mailjournal_queue::ItemId;

use crate::{frame, sync_dir};

/// Where a segment file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Read by recovery at start-up; the last one is appended to.
    Live,
    /// Retired: kept for `get --as-received`.
    Kept,
}

impl Place {
    /// Where this place's segments are.
    pub(crate) fn dir(self, root: &Path) -> PathBuf {
        match self {
            Place::Live => root.join("log"),
            Place::Kept => root.join("kept"),
        }
    }

    /// Where the data files of this place's large messages are.
    pub(crate) fn data_dir(self, root: &Path) -> PathBuf {
        match self {
            Place::Live => root.join("data"),
            Place::Kept => root.join("kept").join("data"),
        }
    }
}

/// The file of segment `base` in `place`.
pub(crate) fn path(root: &Path, place: Place, base: u64) -> PathBuf {
    place.dir(root).join(format!("{base:020}.log"))
}

fn parse_name(name: &OsStr) -> Option<u64> {
    let digits = name.to_str()?.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The segments in `place`, ascending.
pub(crate) fn list(root: &Path, place: Place) -> io::Result<Vec<u64>> {
    let entries = match fs::read_dir(place.dir(root)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut bases = Vec::new();
    for entry in entries {
        if let Some(base) = parse_name(&entry?.file_name()) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Opens segment `base` for reading, live or kept (a retirement may move it between a look
/// at the directory and the open).
pub(crate) fn open(root: &Path, base: u64) -> io::Result<File> {
    match File::open(path(root, Place::Live, base)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => File::open(path(root, Place::Kept, base)),
        other => other,
    }
}

/// The segment holding byte `offset` of the log: the one with the greatest base not past it.
pub(crate) fn containing(root: &Path, offset: u64) -> io::Result<u64> {
    let mut bases = list(root, Place::Live)?;
    bases.extend(list(root, Place::Kept)?);
    bases
        .into_iter()
        .filter(|&base| base <= offset)
        .max()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no segment holds that offset"))
}

/// Where the data file of large message `id` is: with the live ones, else with the kept ones.
pub(crate) fn data_file(root: &Path, id: ItemId) -> PathBuf {
    let id = id.to_string();
    let live = Place::Live.data_dir(root).join(&id);
    if live.exists() {
        return live;
    }
    let kept = Place::Kept.data_dir(root).join(id);
    if kept.exists() { kept } else { live }
}

/// What the spool holds on disk: what start-up reads (live) and what only
/// `get --as-received` reads (kept).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Live log segments.
    pub live_segments: u64,
    /// Bytes of live segments and of the large messages they commit (or that are arriving).
    pub live_bytes: u64,
    /// Retired segments.
    pub kept_segments: u64,
    /// Bytes of retired segments and of their large messages.
    pub kept_bytes: u64,
}

/// Measures the spool under `root` (files that move while it looks are counted where they
/// were found, or not at all).
pub(crate) fn usage(root: &Path) -> io::Result<Usage> {
    let mut usage = Usage::default();
    for (place, segments, bytes) in [
        (Place::Live, &mut usage.live_segments, &mut usage.live_bytes),
        (Place::Kept, &mut usage.kept_segments, &mut usage.kept_bytes),
    ] {
        for base in list(root, place)? {
            if let Ok(meta) = fs::metadata(path(root, place, base)) {
                *segments += 1;
                *bytes += meta.len();
            }
        }
        match fs::read_dir(place.data_dir(root)) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    *bytes += entry.metadata().map_or(0, |m| m.len());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(usage)
}

/// Creates the directories, and moves a commit log from before segments (`commit.log`) to
/// segment 0, where its offsets stay valid.
pub(crate) fn prepare(root: &Path) -> io::Result<()> {
    for place in [Place::Live, Place::Kept] {
        fs::create_dir_all(place.dir(root))?;
        fs::create_dir_all(place.data_dir(root))?;
    }
    fs::create_dir_all(root.join("quarantine"))?;
    let old = root.join("commit.log");
    if old.exists() && list(root, Place::Live)?.is_empty() && list(root, Place::Kept)?.is_empty() {
        fs::rename(&old, path(root, Place::Live, 0))?;
        sync_dir(&Place::Live.dir(root))?;
    }
    sync_dir(root)?;
    sync_dir(&root.join("kept"))
}

/// The segment the committer appends to.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) base: u64,
    pub(crate) file: File,
    /// Bytes committed in it.
    pub(crate) len: u64,
}

/// The live segments' bookkeeping, shared by the committer (which fills and seals them) and
/// the pipeline (which retires them).
#[derive(Debug)]
pub struct Segments {
    root: PathBuf,
    /// Live segments by base: committed records and whether the committer has moved on.
    live: Mutex<BTreeMap<u64, LiveSegment>>,
}

#[derive(Debug, Clone, Copy)]
struct LiveSegment {
    records: u64,
    sealed: bool,
}

impl Segments {
    /// Takes over the live segments recovery found (base → intact records) and opens the one
    /// to append to: the last live segment, or a new one past every segment there is.
    pub(crate) fn open(root: &Path, recovered: &BTreeMap<u64, u64>) -> io::Result<(Self, Active)> {
        let mut live: BTreeMap<u64, LiveSegment> = recovered
            .iter()
            .map(|(&base, &records)| {
                let sealed = true;
                (base, LiveSegment { records, sealed })
            })
            .collect();
        let active = match live.last_entry() {
            Some(mut last) => {
                last.get_mut().sealed = false;
                let base = *last.key();
                let file = OpenOptions::new()
                    .append(true)
                    .open(path(root, Place::Live, base))?;
                let len = file.metadata()?.len();
                Active { base, file, len }
            }
            None => {
                let mut end = 0;
                for base in list(root, Place::Kept)? {
                    let len = fs::metadata(path(root, Place::Kept, base))?.len();
                    end = end.max(base + len);
                }
                let active = create(root, end)?;
                let sealed = false;
                live.insert(end, LiveSegment { records: 0, sealed });
                active
            }
        };
        let segments = Segments {
            root: root.to_path_buf(),
            live: Mutex::new(live),
        };
        Ok((segments, active))
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<u64, LiveSegment>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Seals `current` and starts the segment that follows it.
    pub(crate) fn start_after(&self, current: &Active) -> io::Result<Active> {
        let next = create(&self.root, current.base + current.len)?;
        let mut table = self.table();
        if let Some(segment) = table.get_mut(&current.base) {
            segment.sealed = true;
        }
        table.insert(
            next.base,
            LiveSegment {
                records: 0,
                sealed: false,
            },
        );
        Ok(next)
    }

    /// Counts records the committer has made durable in segment `base`.
    pub(crate) fn committed(&self, base: u64, records: usize) {
        if let Some(segment) = self.table().get_mut(&base) {
            segment.records += records as u64;
        }
    }

    /// The sealed live segments and how many committed records each holds: once all of those
    /// are settled, a segment can be retired.
    pub fn sealed(&self) -> Vec<(u64, u64)> {
        self.table()
            .iter()
            .filter(|(_, s)| s.sealed)
            .map(|(&base, s)| (base, s.records))
            .collect()
    }

    /// Retires sealed segment `base`: its large messages' data files, then the segment itself,
    /// move to `kept/`, where recovery no longer reads them. The caller must first have made
    /// the settled state of every record in it durable.
    pub fn retire(&self, base: u64) -> io::Result<()> {
        if !self.table().get(&base).is_some_and(|s| s.sealed) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a sealed live segment",
            ));
        }
        let live = path(&self.root, Place::Live, base);
        let (data, kept_data) = (
            Place::Live.data_dir(&self.root),
            Place::Kept.data_dir(&self.root),
        );
        let mut moved = false;
        let mut failed = None;
        frame::for_each_frame(&File::open(&live)?, |frame| {
            if frame.record.inline_data || failed.is_some() {
                return;
            }
            let id = frame.record.id.to_string();
            match fs::rename(data.join(&id), kept_data.join(&id)) {
                Ok(()) => moved = true,
                // Moved by a retirement that a crash interrupted.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => failed = Some(e),
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if moved {
            sync_dir(&kept_data)?;
            sync_dir(&data)?;
        }
        fs::rename(&live, path(&self.root, Place::Kept, base))?;
        sync_dir(&Place::Kept.dir(&self.root))?;
        sync_dir(&Place::Live.dir(&self.root))?;
        self.table().remove(&base);
        Ok(())
    }
}

/// A new, empty live segment, its directory entry durable before anything is committed in it.
fn create(root: &Path, base: u64) -> io::Result<Active> {
    let file =
        OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path(root, Place::Live, base))?;
    sync_dir(&Place::Live.dir(root))?;
    Ok(Active { base, file, len: 0 })
}

/// The queue ids of the records in retired (kept) segment `base` of the spool in `root`, in
/// commit order; none when the segment is gone.
pub fn kept_items(root: &Path, base: u64) -> io::Result<Vec<ItemId>> {
    let file = match File::open(path(root, Place::Kept, base)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut ids = Vec::new();
    frame::for_each_frame(&file, |frame| ids.push(frame.record.id))?;
    Ok(ids)
}

/// Deletes retired segment `base` of the spool in `root`, with the data files of its large
/// messages: the as-received copies, once retention says they have been kept long enough.
/// The data files go first and the segment last, each directory synced: a crash in between
/// leaves a kept segment whose data files are gone, and deleting it again finishes the job.
pub fn delete_kept(root: &Path, base: u64) -> io::Result<()> {
    let segment = path(root, Place::Kept, base);
    let kept_data = Place::Kept.data_dir(root);
    let mut removed = false;
    match File::open(&segment) {
        Ok(file) => {
            let mut failed = None;
            frame::for_each_frame(&file, |frame| {
                if frame.record.inline_data || failed.is_some() {
                    return;
                }
                match fs::remove_file(kept_data.join(frame.record.id.to_string())) {
                    Ok(()) => removed = true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => failed = Some(e),
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    if removed {
        sync_dir(&kept_data)?;
    }
    fs::remove_file(&segment)?;
    sync_dir(&Place::Kept.dir(root))
}

/// Every record in the live segments of the spool in `root`, in commit order, read without
/// changing anything (recovery is the running spool's): what a reader in another process
/// needs to tell which messages the spool holds that the archive may not have recorded yet.
/// Memory grows with the live segments, which hold only what is not settled yet.
pub fn live_records(root: &Path) -> io::Result<Vec<crate::Record>> {
    let mut records = Vec::new();
    for base in list(root, Place::Live)? {
        let file = match File::open(path(root, Place::Live, base)) {
            Ok(file) => file,
            // Retired meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        frame::for_each_frame(&file, |frame| {
            let mut record = frame.record;
            record.location.segment = base;
            record.location.log_offset = record.location.log_offset.map(|at| base + at);
            records.push(record);
        })?;
    }
    Ok(records)
}
