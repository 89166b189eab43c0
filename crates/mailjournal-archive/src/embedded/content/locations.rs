//! Where each content lives: `archive/locations.sqlite3`, one row per hash (pack, offset,
//! length) and one per pack (how much of it is known durable, how much retention freed).
//! The store is its one writer; readers in other processes look hashes up in it.

use std::path::Path;

use mailjournal_queue::ContentHash;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::ArchiveResult;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS content (
    hash BLOB PRIMARY KEY,
    pack INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    len INTEGER NOT NULL
) WITHOUT ROWID;
-- A pack's records in order: what follows its durable mark after a crash, what compaction
-- copies.
CREATE INDEX IF NOT EXISTS content_pack ON content(pack, offset);
CREATE TABLE IF NOT EXISTS packs (
    pack INTEGER PRIMARY KEY,
    durable_len INTEGER NOT NULL DEFAULT 0,
    freed INTEGER NOT NULL DEFAULT 0
);
";

/// Where one content's bytes are: `len` bytes at `offset` of pack `pack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Location {
    pub(super) pack: u64,
    pub(super) offset: u64,
    pub(super) len: u64,
}

/// The writer's connection, with one transaction open from the first change to the next
/// [`commit`](Locations::commit).
#[derive(Debug)]
pub(super) struct Locations {
    db: Connection,
}

impl Locations {
    pub(super) fn open(path: &Path) -> ArchiveResult<Locations> {
        let db = Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(SCHEMA)?;
        // As the index: consistent always; what the last commits said may be lost in a power
        // loss, which the pack's durable mark and the check at open make up for.
        db.pragma_update(None, "synchronous", "NORMAL")?;
        // Keyed by hash, as the index's content columns: the same reasons for a large cache
        // and a long WAL.
        db.pragma_update(None, "cache_size", -crate::embedded::index::CACHE_KIB)?;
        db.pragma_update(
            None,
            "wal_autocheckpoint",
            crate::embedded::index::WAL_CHECKPOINT_PAGES,
        )?;
        Ok(Locations { db })
    }

    fn write(&self) -> ArchiveResult<&Connection> {
        if self.db.is_autocommit() {
            self.db.execute_batch("BEGIN IMMEDIATE")?;
        }
        Ok(&self.db)
    }

    /// Makes the changes so far visible to readers (not durable: see [`durably`]).
    ///
    /// [`durably`]: Locations::durably
    pub(super) fn commit(&self) -> ArchiveResult<()> {
        if !self.db.is_autocommit() {
            self.db.execute_batch("COMMIT")?;
        }
        Ok(())
    }

    /// Commits what is open, then runs `write` in a transaction that survives a power loss
    /// once this returns (in WAL mode a synced commit makes every one before it durable too).
    /// A failed `write` is rolled back.
    pub(super) fn durably<T>(&self, write: impl FnOnce() -> ArchiveResult<T>) -> ArchiveResult<T> {
        self.commit()?;
        // Only outside a transaction may the level change.
        self.db.pragma_update(None, "synchronous", "FULL")?;
        let written = write().and_then(|value| self.commit().map(|()| value));
        if written.is_err() && !self.db.is_autocommit() {
            let _ = self.db.execute_batch("ROLLBACK");
        }
        self.db.pragma_update(None, "synchronous", "NORMAL")?;
        written
    }

    pub(super) fn get(&self, hash: &ContentHash) -> ArchiveResult<Option<Location>> {
        lookup(&self.db, hash)
    }

    pub(super) fn insert(&self, hash: &ContentHash, at: Location) -> ArchiveResult<()> {
        self.write()?
            .prepare_cached(
                "INSERT OR REPLACE INTO content (hash, pack, offset, len) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                hash.0.as_slice(),
                at.pack as i64,
                at.offset as i64,
                at.len as i64
            ])?;
        Ok(())
    }

    /// Forgets `hash`, counting its bytes as freed in its pack. Its location, if it had one.
    pub(super) fn remove(&self, hash: &ContentHash) -> ArchiveResult<Option<Location>> {
        let Some(at) = self.get(hash)? else {
            return Ok(None);
        };
        let db = self.write()?;
        db.prepare_cached("DELETE FROM content WHERE hash = ?1")?
            .execute([hash.0.as_slice()])?;
        db.prepare_cached("UPDATE packs SET freed = freed + ?2 WHERE pack = ?1")?
            .execute(params![at.pack as i64, at.len as i64])?;
        Ok(Some(at))
    }

    pub(super) fn add_pack(&self, pack: u64) -> ArchiveResult<()> {
        self.write()?
            .prepare_cached("INSERT OR IGNORE INTO packs (pack) VALUES (?1)")?
            .execute([pack as i64])?;
        Ok(())
    }

    /// Records that pack `pack` is durable up to `len` bytes.
    pub(super) fn mark_durable(&self, pack: u64, len: u64) -> ArchiveResult<()> {
        self.write()?
            .prepare_cached("UPDATE packs SET durable_len = MAX(durable_len, ?2) WHERE pack = ?1")?
            .execute(params![pack as i64, len as i64])?;
        Ok(())
    }

    pub(super) fn forget_pack(&self, pack: u64) -> ArchiveResult<()> {
        let db = self.write()?;
        db.prepare_cached("DELETE FROM content WHERE pack = ?1")?
            .execute([pack as i64])?;
        db.prepare_cached("DELETE FROM packs WHERE pack = ?1")?
            .execute([pack as i64])?;
        Ok(())
    }

    /// Every pack known, with its durable mark and the bytes retention freed in it.
    pub(super) fn packs(&self) -> ArchiveResult<Vec<(u64, u64, u64)>> {
        let mut stmt = self
            .db
            .prepare_cached("SELECT pack, durable_len, freed FROM packs ORDER BY pack")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether anything refers to pack `pack`.
    pub(super) fn has_records(&self, pack: u64) -> ArchiveResult<bool> {
        Ok(self
            .db
            .prepare_cached("SELECT 1 FROM content WHERE pack = ?1 LIMIT 1")?
            .query_row([pack as i64], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The records of pack `pack` whose bytes start at or after `from`, in order.
    pub(super) fn in_pack(
        &self,
        pack: u64,
        from: u64,
    ) -> ArchiveResult<Vec<(ContentHash, Location)>> {
        let mut stmt = self.db.prepare_cached(
            "SELECT hash, offset, len FROM content WHERE pack = ?1 AND offset >= ?2 ORDER BY offset",
        )?;
        let rows = stmt.query_map(params![pack as i64, from as i64], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })?;
        let mut found = Vec::new();
        for row in rows {
            let (hash, offset, len) = row?;
            found.push((content_hash(hash)?, Location { pack, offset, len }));
        }
        Ok(found)
    }
}

fn content_hash(bytes: Vec<u8>) -> ArchiveResult<ContentHash> {
    let array: [u8; 32] =
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| crate::ArchiveError::Invalid {
                what: "content hash",
                value: format!("{bytes:02x?}"),
            })?;
    Ok(ContentHash(array))
}

fn lookup(db: &Connection, hash: &ContentHash) -> ArchiveResult<Option<Location>> {
    Ok(db
        .prepare_cached("SELECT pack, offset, len FROM content WHERE hash = ?1")?
        .query_row([hash.0.as_slice()], |r| {
            Ok(Location {
                pack: r.get::<_, i64>(0)? as u64,
                offset: r.get::<_, i64>(1)? as u64,
                len: r.get::<_, i64>(2)? as u64,
            })
        })
        .optional()?)
}

/// A connection of another process than the writer's.
fn open_read_only(path: &Path) -> ArchiveResult<Connection> {
    let db = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    db.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(db)
}

/// Whether the record of `hash` is within its pack's durable mark, from another process:
/// `None` when it has no location.
pub(super) fn durable_from(path: &Path, hash: &ContentHash) -> ArchiveResult<Option<bool>> {
    if !path.exists() {
        return Ok(None);
    }
    let db = open_read_only(path)?;
    let Some(at) = lookup(&db, hash)? else {
        return Ok(None);
    };
    let mark: Option<i64> = db
        .query_row(
            "SELECT durable_len FROM packs WHERE pack = ?1",
            [at.pack as i64],
            |r| r.get(0),
        )
        .optional()?;
    Ok(Some(mark.is_some_and(|m| m as u64 >= at.offset + at.len)))
}

/// Looks `hash` up from another process: `None` when it has no location, or when no content
/// was ever stored in packs.
pub(super) fn lookup_from(path: &Path, hash: &ContentHash) -> ArchiveResult<Option<Location>> {
    if !path.exists() {
        return Ok(None);
    }
    let db = open_read_only(path)?;
    lookup(&db, hash)
}
