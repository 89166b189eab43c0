//! Content files: `pending/<HASH>` until made durable, then `<first two digits>/<HASH>`.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use mailjournal_queue::ContentHash;

use crate::{ArchiveResult, ContentStore};

/// Content waiting to be made durable past this many bytes is made durable at once, so that
/// the check after a crash (every pending file is hashed) stays short.
pub const PENDING_CONTENT_LIMIT: u64 = 64 * 1024 * 1024;

/// Content stored as files under one directory.
#[derive(Debug)]
pub struct FileContent {
    dir: PathBuf,
    /// Bytes in `pending/`, not yet durable.
    pending_bytes: Cell<u64>,
    /// What is in `pending/`: this process is its only writer, so a look here replaces a
    /// `stat` per item stored (of two, the other for the durable file).
    pending: RefCell<HashSet<ContentHash>>,
}

impl FileContent {
    /// Opens (creating) the content directory `dir`. Pending content that did not survive a
    /// crash whole (it was never synced) is removed: whatever does not match its name.
    pub fn open(dir: &Path) -> ArchiveResult<FileContent> {
        let pending = pending_dir(dir);
        fs::create_dir_all(&pending)?;
        let (pending, pending_bytes) = check_pending(&pending)?;
        Ok(FileContent {
            dir: dir.to_path_buf(),
            pending_bytes: Cell::new(pending_bytes),
            pending: RefCell::new(pending),
        })
    }

    /// Bytes waiting to be made durable.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes.get()
    }
}

/// Where content with this hash lives once durable.
fn durable_path(dir: &Path, hash: &ContentHash) -> PathBuf {
    let name = hash.to_string();
    dir.join(&name[..2]).join(name)
}

/// Where content waits until it is made durable (not a two-digit shard name, so never one of
/// those).
fn pending_dir(dir: &Path) -> PathBuf {
    dir.join("pending")
}

/// The stored content with this hash, pending or durable, from content directory `dir`: for
/// readers in other processes while the server may move it from one to the other (pending is
/// looked at first, so a move in between is seen).
pub(crate) fn read_from(dir: &Path, hash: &ContentHash) -> io::Result<Vec<u8>> {
    match fs::read(pending_dir(dir).join(hash.to_string())) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::read(durable_path(dir, hash)),
        read => read,
    }
}

/// The size of the stored content with this hash, pending or durable.
pub(crate) fn len_of(dir: &Path, hash: &ContentHash) -> io::Result<u64> {
    match fs::metadata(pending_dir(dir).join(hash.to_string())) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(fs::metadata(durable_path(dir, hash))?.len())
        }
        found => Ok(found?.len()),
    }
}

/// After a crash, pending content may be missing, short or garbage (it was never synced):
/// keeps what matches its name, removes the rest. Returns what it kept and its bytes.
fn check_pending(pending: &Path) -> io::Result<(HashSet<ContentHash>, u64)> {
    let (mut kept, mut bytes) = (HashSet::new(), 0);
    for entry in fs::read_dir(pending)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let intact = name
            .to_str()
            .and_then(|n| n.parse::<ContentHash>().ok())
            .filter(|hash| file_hash(&path).is_ok_and(|h| h == *hash));
        if let Some(hash) = intact {
            bytes += entry.metadata()?.len();
            kept.insert(hash);
        } else {
            tracing::warn!(file = %path.display(), "unsynced archive content did not survive: removed (archived again from the spool)");
            fs::remove_file(&path)?;
        }
    }
    Ok((kept, bytes))
}

/// The SHA-256 of a file, streamed.
fn file_hash(path: &Path) -> io::Result<ContentHash> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    io::copy(&mut fs::File::open(path)?, &mut hasher)?;
    Ok(ContentHash(hasher.finalize().into()))
}

/// Makes `paths` (files or directories under the archive) durable: on Linux one `syncfs`
/// for them all (the archive and its pending files share one file system), elsewhere one
/// `fsync` each.
fn sync_paths(dir: &Path, paths: &[PathBuf]) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let _ = paths;
        rustix::fs::syncfs(fs::File::open(dir)?)?;
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        for path in paths {
            fs::File::open(path)?.sync_all()?;
        }
    }
    Ok(())
}

impl ContentStore for FileContent {
    fn put(&self, hash: &ContentHash, bytes: &[u8]) -> ArchiveResult<()> {
        if self.contains(hash)? {
            return Ok(());
        }
        // Written in place: a crash may leave it short, but pending content is never synced
        // and the open checks each pending file against its name (a rename through a
        // temporary name would cost a directory update per item for nothing). Readers never
        // see it short: the index refers to it only once the write has returned.
        let written = fs::File::create(pending_dir(&self.dir).join(hash.to_string()))
            .and_then(|mut file| file.write_all(bytes));
        if let Err(e) = written {
            // Short or absent, it must not count as stored (the open would remove it anyway).
            let _ = fs::remove_file(pending_dir(&self.dir).join(hash.to_string()));
            return Err(e.into());
        }
        self.pending.borrow_mut().insert(*hash);
        self.pending_bytes
            .set(self.pending_bytes.get() + bytes.len() as u64);
        if self.pending_bytes.get() >= PENDING_CONTENT_LIMIT {
            self.make_durable()?;
        }
        Ok(())
    }

    fn contains(&self, hash: &ContentHash) -> ArchiveResult<bool> {
        Ok(self.pending.borrow().contains(hash) || durable_path(&self.dir, hash).exists())
    }

    fn read(&self, hash: &ContentHash) -> ArchiveResult<Vec<u8>> {
        Ok(read_from(&self.dir, hash)?)
    }

    fn remove(&self, hash: &ContentHash) -> ArchiveResult<()> {
        self.pending.borrow_mut().remove(hash);
        for path in [
            pending_dir(&self.dir).join(hash.to_string()),
            durable_path(&self.dir, hash),
        ] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                removed => removed?,
            }
        }
        Ok(())
    }

    fn make_durable(&self) -> ArchiveResult<()> {
        let pending = pending_dir(&self.dir);
        let hashes: Vec<ContentHash> = self.pending.borrow().iter().copied().collect();
        if hashes.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = hashes.iter().map(ContentHash::to_string).collect();
        // The data first, then the moves: a file in its shard is always durable.
        let files: Vec<PathBuf> = names.iter().map(|name| pending.join(name)).collect();
        sync_paths(&self.dir, &files)?;
        let mut dirs = std::collections::BTreeSet::new();
        for ((hash, name), file) in hashes.iter().zip(&names).zip(&files) {
            let shard = self.dir.join(&name[..2]);
            if !dirs.contains(&shard) {
                fs::create_dir_all(&shard)?;
            }
            fs::rename(file, shard.join(name))?;
            // One by one: after a failure part way, the next call moves only what is left.
            self.pending.borrow_mut().remove(hash);
            dirs.insert(shard);
        }
        dirs.extend([pending, self.dir.clone()]);
        sync_paths(&self.dir, &dirs.into_iter().collect::<Vec<_>>())?;
        self.pending_bytes.set(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash_of;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mailjournal-content-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn content_waits_in_pending_until_made_durable_and_only_what_matches_survives_a_crash() {
        let dir = temp_dir("content");
        let store = FileContent::open(&dir).unwrap();
        let (a, b) = (b"first archived form".as_slice(), b"second".as_slice());
        let (hash_a, hash_b) = (hash_of(a), hash_of(b));
        let (name_a, name_b) = (hash_a.to_string(), hash_b.to_string());
        store.put(&hash_a, a).unwrap();
        store.put(&hash_a, a).unwrap();
        assert!(store.contains(&hash_a).unwrap());
        assert_eq!(store.pending_bytes(), a.len() as u64, "stored once");
        assert!(dir.join("pending").join(&name_a).exists());
        assert_eq!(store.read(&hash_a).unwrap(), a);

        store.make_durable().unwrap();
        assert_eq!(store.pending_bytes(), 0);
        assert!(!dir.join("pending").join(&name_a).exists());
        assert_eq!(fs::read(dir.join(&name_a[..2]).join(&name_a)).unwrap(), a);
        assert_eq!(read_from(&dir, &hash_a).unwrap(), a);
        store.put(&hash_a, a).unwrap();
        assert_eq!(
            store.pending_bytes(),
            0,
            "durable content is not stored again"
        );

        // A crash: one pending file survived whole, one did not, one never got its name.
        store.put(&hash_b, b).unwrap();
        drop(store);
        let short = "ab".repeat(32);
        fs::write(dir.join("pending").join(&short), b"").unwrap();
        fs::write(dir.join("pending").join(format!(".{short}.tmp")), b"x").unwrap();
        let store = FileContent::open(&dir).unwrap();
        assert!(store.contains(&hash_b).unwrap());
        assert!(dir.join("pending").join(&name_b).exists());
        assert_eq!(store.pending_bytes(), b.len() as u64);
        assert!(!store.contains(&short.parse().unwrap()).unwrap());
        assert_eq!(
            fs::read_dir(dir.join("pending")).unwrap().count(),
            1,
            "only the intact file is left"
        );
    }

    #[test]
    fn content_past_the_pending_limit_is_made_durable_at_once() {
        let dir = temp_dir("content-limit");
        let store = FileContent::open(&dir).unwrap();
        let large = vec![b'z'; PENDING_CONTENT_LIMIT as usize];
        let hash = hash_of(&large);
        store.put(&hash, &large).unwrap();
        assert_eq!(store.pending_bytes(), 0);
        let name = hash.to_string();
        assert!(dir.join(&name[..2]).join(&name).exists());
    }
}
