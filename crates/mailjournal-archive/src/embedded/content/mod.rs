//! Content under one directory (`DATA_DIR/archive/`), appended to pack files (`packs/`), with
//! where each hash lives in `locations.sqlite3`.
//!
//! Why packs: one file per archived message cost a file creation, a `stat`, a rename into
//! its shard and a directory update each, 26 % of the pipeline's CPU (perf, 2026-12-02); an
//! append and one row cost a fraction of that. What retention removes is erased by
//! compaction: a pack with removed records has its live ones copied into the active pack
//! and is then deleted, at the next [`make_durable`](crate::ContentStore::make_durable).
//!
//! Crash safety: appends are not synced one by one. `make_durable` syncs every pack written
//! since the last call and records, durably, how far each is whole; when the store opens,
//! every record past that mark is checked against its hash and forgotten if it did not
//! survive (the engine archives such items again from the spool, which keeps them until
//! then). A pack is never appended to after a restart.

mod locations;
mod loose;
mod pack;

use std::cell::{Cell, RefCell};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use mailjournal_queue::ContentHash;

use crate::{ArchiveResult, ContentStore};
use locations::{Location, Locations};
use pack::ActivePack;

/// Content waiting to be made durable past this many bytes is made durable at once, so that
/// the check after a crash (every record past the durable marks is hashed) stays short.
pub const PENDING_CONTENT_LIMIT: u64 = 64 * 1024 * 1024;

/// A pack is closed, and the next one begun, once it is this large.
pub const PACK_LIMIT: u64 = 256 * 1024 * 1024;

/// Compaction copies at most about this many live bytes a call; the rest waits for the next.
const COMPACTION_BUDGET: u64 = 256 * 1024 * 1024;

/// How often a reader in another process looks a hash up again when the pack it was told
/// of has just been compacted away.
const READ_TRIES: usize = 3;

fn locations_path(dir: &Path) -> PathBuf {
    dir.join("locations.sqlite3")
}

/// Content stored once by hash, in pack files under one directory.
///
/// ```
/// use mailjournal_archive::{ContentStore, embedded::FileContent, hash_of};
///
/// let dir = std::env::temp_dir().join(format!("content-doc-{}", std::process::id()));
/// let store = FileContent::open(&dir)?;
/// let hash = hash_of(b"an archived message");
/// store.put(&hash, b"an archived message")?;
/// store.put(&hash, b"an archived message")?; // stored once
/// store.make_durable()?; // survives a power loss from here on
/// assert_eq!(store.read(&hash)?, b"an archived message");
/// # drop(store);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FileContent {
    dir: PathBuf,
    locations: Locations,
    active: RefCell<ActivePack>,
    /// Packs closed since the last `make_durable`, with their length: it syncs them.
    closed: RefCell<Vec<(u64, File, u64)>>,
    /// Bytes stored since the last `make_durable`.
    pending_bytes: Cell<u64>,
    /// Whether loose files of the layout before packs may be here.
    loose: bool,
}

impl FileContent {
    /// Opens (creating) the content directory `dir`. Records that did not survive a crash
    /// whole (they were never synced) are forgotten, packs nothing refers to any more are
    /// deleted, and loose content that was still pending moves into a pack.
    pub fn open(dir: &Path) -> ArchiveResult<FileContent> {
        fs::create_dir_all(pack::packs_dir(dir))?;
        let locations = Locations::open(&locations_path(dir))?;
        let newest = recover(dir, &locations)?;
        let active = ActivePack::create(dir, newest.map_or(0, |n| n + 1))?;
        locations.add_pack(active.number)?;
        locations.commit()?;
        let store = FileContent {
            dir: dir.to_path_buf(),
            locations,
            active: RefCell::new(active),
            closed: RefCell::new(Vec::new()),
            pending_bytes: Cell::new(0),
            loose: loose::present(dir)?,
        };
        if store.loose {
            let taken = loose::take_pending(dir, |hash, bytes| store.put(hash, bytes))?;
            store.make_durable()?;
            for path in taken {
                fs::remove_file(path)?;
            }
            let _ = fs::remove_dir(loose::pending_dir(dir));
        }
        Ok(store)
    }

    /// Bytes stored since content was last made durable.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes.get()
    }

    /// Closes the active pack and begins the next.
    fn close_active(&self) -> ArchiveResult<()> {
        let mut active = self.active.borrow_mut();
        let next = ActivePack::create(&self.dir, active.number + 1)?;
        self.locations.add_pack(next.number)?;
        let closed = std::mem::replace(&mut *active, next);
        let (number, end) = (closed.number, closed.end);
        self.closed
            .borrow_mut()
            .push((number, closed.into_file(), end));
        Ok(())
    }

    /// Appends `bytes` under `hash` to the active pack and records where.
    fn append(&self, hash: &ContentHash, bytes: &[u8]) -> ArchiveResult<Location> {
        let at = self.active.borrow_mut().append(hash, bytes)?;
        self.locations.insert(hash, at)?;
        if self.active.borrow().end >= PACK_LIMIT {
            self.close_active()?;
        }
        Ok(at)
    }

    /// Copies the live records of packs retention removed content from into the active
    /// pack, within the budget, and forgets those packs: returns them, for deletion once the
    /// copies are durable.
    fn compact(&self) -> ArchiveResult<Vec<u64>> {
        let mut candidates: Vec<u64> = self
            .locations
            .packs()?
            .into_iter()
            .filter(|&(_, _, freed)| freed > 0)
            .map(|(pack, _, _)| pack)
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let active = self.active.borrow().number;
        if candidates.contains(&active) {
            self.close_active()?;
        }
        candidates.sort_unstable();
        let mut budget = COMPACTION_BUDGET;
        let mut emptied = Vec::new();
        for pack in candidates {
            let live = self.locations.in_pack(pack, 0)?;
            let bytes: u64 = live.iter().map(|(_, at)| at.len).sum();
            if bytes > budget && !emptied.is_empty() {
                break;
            }
            budget = budget.saturating_sub(bytes);
            for (hash, at) in live {
                let content = pack::read(&self.dir, &hash, at)?;
                self.append(&hash, &content)?;
            }
            self.locations.forget_pack(pack)?;
            emptied.push(pack);
        }
        Ok(emptied)
    }
}

/// Checks, after a crash, what the last run wrote past its durable marks; forgets packs whose
/// file never came to be and deletes pack files nothing refers to. Returns the greatest pack
/// number in use or on disk.
fn recover(dir: &Path, locations: &Locations) -> ArchiveResult<Option<u64>> {
    let files = pack::pack_files(dir)?;
    let known = locations.packs()?;
    let empty = locations.durably(|| {
        let mut lost = 0;
        for &(number, durable, _) in &known {
            if !files.contains(&number) {
                if durable == 0 {
                    // Created, then lost before anything in it was durable.
                    locations.forget_pack(number)?;
                } else {
                    tracing::error!(
                        pack = number,
                        "archive content pack missing: what it held cannot be read"
                    );
                }
                continue;
            }
            for (hash, at) in locations.in_pack(number, durable)? {
                if !pack::intact(dir, &hash, at) {
                    locations.remove(&hash)?;
                    lost += 1;
                }
            }
        }
        if lost > 0 {
            tracing::warn!(
                records = lost,
                "unsynced archive content did not survive: forgotten (archived again from the spool)"
            );
        }
        let mut empty = Vec::new();
        for &number in &files {
            if !locations.has_records(number)? {
                locations.forget_pack(number)?;
                empty.push(number);
            }
        }
        Ok(empty)
    })?;
    // Deleted only once nothing refers to them, durably.
    for number in empty {
        fs::remove_file(pack::pack_path(dir, number))?;
    }
    Ok(known
        .iter()
        .map(|&(n, _, _)| n)
        .chain(files.iter().copied())
        .max())
}

/// The stored content with this hash, for readers in other processes while the server
/// appends, compacts and deletes.
pub(crate) fn read_from(dir: &Path, hash: &ContentHash) -> ArchiveResult<Vec<u8>> {
    for _ in 0..READ_TRIES {
        match locations::lookup_from(&locations_path(dir), hash)? {
            Some(at) => match pack::read(dir, hash, at) {
                // Compacted between the look-up and the read: look again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                read => return Ok(read?),
            },
            None => return Ok(loose::read(dir, hash)?),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("content {hash} kept moving"),
    )
    .into())
}

/// Whether the stored content with this hash would survive a power loss now; `None` when it
/// is not stored.
pub(crate) fn durable_from(dir: &Path, hash: &ContentHash) -> ArchiveResult<Option<bool>> {
    match locations::durable_from(&locations_path(dir), hash)? {
        Some(durable) => Ok(Some(durable)),
        None if loose::exists(dir, hash) => Ok(Some(true)),
        None => Ok(loose::len(dir, hash).ok().map(|_| false)),
    }
}

/// The size of the stored content with this hash.
pub(crate) fn len_of(dir: &Path, hash: &ContentHash) -> ArchiveResult<u64> {
    match locations::lookup_from(&locations_path(dir), hash)? {
        Some(at) => Ok(at.len),
        None => Ok(loose::len(dir, hash)?),
    }
}

impl ContentStore for FileContent {
    fn put(&self, hash: &ContentHash, bytes: &[u8]) -> ArchiveResult<()> {
        if self.contains(hash)? {
            return Ok(());
        }
        self.append(hash, bytes)?;
        self.pending_bytes
            .set(self.pending_bytes.get() + bytes.len() as u64);
        if self.pending_bytes.get() >= PENDING_CONTENT_LIMIT {
            self.make_durable()?;
        }
        Ok(())
    }

    fn contains(&self, hash: &ContentHash) -> ArchiveResult<bool> {
        Ok(self.locations.get(hash)?.is_some() || self.loose && loose::exists(&self.dir, hash))
    }

    fn read(&self, hash: &ContentHash) -> ArchiveResult<Vec<u8>> {
        match self.locations.get(hash)? {
            Some(at) => Ok(pack::read(&self.dir, hash, at)?),
            None => Ok(loose::read(&self.dir, hash)?),
        }
    }

    fn flush(&self) -> ArchiveResult<()> {
        self.locations.commit()
    }

    fn remove(&self, hash: &ContentHash) -> ArchiveResult<()> {
        self.locations.remove(hash)?;
        if self.loose {
            loose::remove(&self.dir, hash)?;
        }
        Ok(())
    }

    fn make_durable(&self) -> ArchiveResult<()> {
        let emptied = self.locations.durably(|| {
            let emptied = self.compact()?;
            for (number, file, len) in self.closed.borrow().iter() {
                if !emptied.contains(number) {
                    file.sync_data()?;
                    self.locations.mark_durable(*number, *len)?;
                }
            }
            let active = self.active.borrow();
            active.sync()?;
            self.locations.mark_durable(active.number, active.end)?;
            Ok(emptied)
        })?;
        // Nothing refers to them any more, durably: the removed content goes with them.
        for pack in emptied {
            match fs::remove_file(pack::pack_path(&self.dir, pack)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                removed => removed?,
            }
        }
        self.closed.borrow_mut().clear();
        self.pending_bytes.set(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
