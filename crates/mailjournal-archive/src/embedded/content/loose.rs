//! Loose content files, the layout before packs: `pending/<HASH>` until made durable, then
//! `<first two digits>/<HASH>`. Archives written so keep them: they are read and removed
//! here, and what was still pending moves into a pack when the store opens.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use mailjournal_queue::ContentHash;

fn durable_path(dir: &Path, hash: &ContentHash) -> PathBuf {
    let name = hash.to_string();
    dir.join(&name[..2]).join(name)
}

pub(super) fn pending_dir(dir: &Path) -> PathBuf {
    dir.join("pending")
}

/// Whether content directory `dir` has any loose content (or the place for it).
pub(super) fn present(dir: &Path) -> io::Result<bool> {
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let shard = name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if shard || name == "pending" {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The loose content with this hash, pending or durable (pending is looked at first, so that
/// a move in between by an older writer is seen).
pub(super) fn read(dir: &Path, hash: &ContentHash) -> io::Result<Vec<u8>> {
    match fs::read(pending_dir(dir).join(hash.to_string())) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::read(durable_path(dir, hash)),
        read => read,
    }
}

pub(super) fn len(dir: &Path, hash: &ContentHash) -> io::Result<u64> {
    match fs::metadata(pending_dir(dir).join(hash.to_string())) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(fs::metadata(durable_path(dir, hash))?.len())
        }
        found => Ok(found?.len()),
    }
}

/// Whether a durable loose file holds this hash (pending ones moved into a pack at open).
pub(super) fn exists(dir: &Path, hash: &ContentHash) -> bool {
    durable_path(dir, hash).exists()
}

pub(super) fn remove(dir: &Path, hash: &ContentHash) -> io::Result<()> {
    for path in [
        pending_dir(dir).join(hash.to_string()),
        durable_path(dir, hash),
    ] {
        match fs::remove_file(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            removed => removed?,
        }
    }
    Ok(())
}

/// Hands each pending file that matches its name to `store` and returns their paths, to be
/// removed once what `store` wrote is durable; the others are removed at once (they were
/// never synced, and did not survive a crash whole).
pub(super) fn take_pending(
    dir: &Path,
    mut store: impl FnMut(&ContentHash, &[u8]) -> crate::ArchiveResult<()>,
) -> crate::ArchiveResult<Vec<PathBuf>> {
    let mut taken = Vec::new();
    let Ok(entries) = fs::read_dir(pending_dir(dir)) else {
        return Ok(taken);
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok());
        let bytes = fs::read(&path)?;
        match name {
            Some(hash) if crate::hash_of(&bytes) == hash => {
                store(&hash, &bytes)?;
                taken.push(path);
            }
            _ => {
                tracing::warn!(file = %path.display(), "unsynced archive content did not survive: removed (archived again from the spool)");
                fs::remove_file(&path)?;
            }
        }
    }
    Ok(taken)
}
