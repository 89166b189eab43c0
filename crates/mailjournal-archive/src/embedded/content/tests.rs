//! The pack store on real files: storing once, reading from another process, what survives
//! a crash, what retention erases, and archives written before packs.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::hash_of;

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("mailjournal-content-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// Every pack's bytes, one after the other.
fn all_pack_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for n in pack::pack_files(dir).unwrap() {
        all.extend(fs::read(pack::pack_path(dir, n)).unwrap());
    }
    all
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn content_is_stored_once_and_read_back_here_and_from_another_process() {
    let dir = temp_dir("once");
    let store = FileContent::open(&dir).unwrap();
    let (a, b) = (b"first archived form".as_slice(), b"second".as_slice());
    let (hash_a, hash_b) = (hash_of(a), hash_of(b));
    store.put(&hash_a, a).unwrap();
    store.put(&hash_a, a).unwrap();
    store.put(&hash_b, b).unwrap();
    assert!(store.contains(&hash_a).unwrap());
    assert!(!store.contains(&hash_of(b"never stored")).unwrap());
    assert_eq!(
        store.pending_bytes(),
        (a.len() + b.len()) as u64,
        "a stored once"
    );
    assert_eq!(store.read(&hash_a).unwrap(), a);
    // Another process sees it once the store flushed (the engine does before its commit).
    store.flush().unwrap();
    assert_eq!(read_from(&dir, &hash_b).unwrap(), b);
    assert_eq!(len_of(&dir, &hash_a).unwrap(), a.len() as u64);
    assert!(read_from(&dir, &hash_of(b"never stored")).is_err());
    store.make_durable().unwrap();
    assert_eq!(store.pending_bytes(), 0);
    drop(store);

    let store = FileContent::open(&dir).unwrap();
    assert_eq!(store.read(&hash_a).unwrap(), a);
    store.put(&hash_a, a).unwrap();
    assert_eq!(
        store.pending_bytes(),
        0,
        "durable content is not stored again"
    );
}

#[test]
fn what_was_not_made_durable_is_checked_at_open_and_only_what_survived_whole_is_kept() {
    let dir = temp_dir("crash");
    let store = FileContent::open(&dir).unwrap();
    let durable = b"made durable".as_slice();
    store.put(&hash_of(durable), durable).unwrap();
    store.make_durable().unwrap();
    let (whole, torn) = (
        b"survived whole".as_slice(),
        b"torn by the crash".as_slice(),
    );
    store.put(&hash_of(whole), whole).unwrap();
    store.put(&hash_of(torn), torn).unwrap();
    store.flush().unwrap();
    let at = store.locations.get(&hash_of(torn)).unwrap().unwrap();
    drop(store);
    // A power loss: the last record's bytes never reached the disk.
    let path = pack::pack_path(&dir, at.pack);
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(at.offset + 3).unwrap();

    let store = FileContent::open(&dir).unwrap();
    assert_eq!(store.read(&hash_of(durable)).unwrap(), durable);
    assert_eq!(store.read(&hash_of(whole)).unwrap(), whole);
    assert!(!store.contains(&hash_of(torn)).unwrap(), "forgotten");
    assert!(read_from(&dir, &hash_of(torn)).is_err());
    // Stored again (from the spool, by the engine), into a new pack.
    store.put(&hash_of(torn), torn).unwrap();
    assert_eq!(store.read(&hash_of(torn)).unwrap(), torn);
    assert_ne!(
        store.locations.get(&hash_of(torn)).unwrap().unwrap().pack,
        at.pack
    );
}

#[test]
fn removed_content_is_erased_from_the_packs_and_what_stays_is_still_read() {
    let dir = temp_dir("erase");
    let store = FileContent::open(&dir).unwrap();
    let secret = b"a message whose retention ended".as_slice();
    let kept = b"a message on hold".as_slice();
    store.put(&hash_of(secret), secret).unwrap();
    store.put(&hash_of(kept), kept).unwrap();
    store.make_durable().unwrap();
    assert!(holds(&all_pack_bytes(&dir), secret));
    let old_pack = store.locations.get(&hash_of(kept)).unwrap().unwrap().pack;

    store.remove(&hash_of(secret)).unwrap();
    store.remove(&hash_of(b"never stored")).unwrap();
    assert!(!store.contains(&hash_of(secret)).unwrap());
    store.make_durable().unwrap();
    assert!(!holds(&all_pack_bytes(&dir), secret), "erased");
    assert!(!pack::pack_path(&dir, old_pack).exists());
    assert_eq!(store.read(&hash_of(kept)).unwrap(), kept);
    store.flush().unwrap();
    assert_eq!(read_from(&dir, &hash_of(kept)).unwrap(), kept);
    drop(store);

    let store = FileContent::open(&dir).unwrap();
    assert_eq!(store.read(&hash_of(kept)).unwrap(), kept);
    // Everything removed: no pack is left holding anything.
    store.remove(&hash_of(kept)).unwrap();
    store.make_durable().unwrap();
    assert!(!holds(&all_pack_bytes(&dir), kept));
    drop(store);
    FileContent::open(&dir).unwrap();
    assert_eq!(all_pack_bytes(&dir), b"", "only the new, empty active pack");
}

#[test]
fn content_past_the_pending_limit_is_made_durable_at_once() {
    let dir = temp_dir("limit");
    let store = FileContent::open(&dir).unwrap();
    let large = vec![b'z'; PENDING_CONTENT_LIMIT as usize];
    let hash = hash_of(&large);
    store.put(&hash, &large).unwrap();
    assert_eq!(store.pending_bytes(), 0);
    let at = store.locations.get(&hash).unwrap().unwrap();
    let marks = store.locations.packs().unwrap();
    let mark = marks.iter().find(|(n, _, _)| *n == at.pack).unwrap().1;
    assert_eq!(mark, at.offset + at.len, "durable up to its end");
}

#[test]
fn loose_files_of_the_layout_before_packs_are_read_removed_and_pending_ones_move_into_a_pack() {
    let dir = temp_dir("loose");
    let (old, pending) = (
        b"archived before packs".as_slice(),
        b"pending then".as_slice(),
    );
    let (old_hash, pending_hash) = (hash_of(old), hash_of(pending));
    let (old_name, pending_name) = (old_hash.to_string(), pending_hash.to_string());
    fs::create_dir_all(dir.join(&old_name[..2])).unwrap();
    fs::create_dir_all(dir.join("pending")).unwrap();
    fs::write(dir.join(&old_name[..2]).join(&old_name), old).unwrap();
    fs::write(dir.join("pending").join(&pending_name), pending).unwrap();
    // A pending file that did not survive a crash whole.
    fs::write(dir.join("pending").join("ab".repeat(32)), b"").unwrap();

    let store = FileContent::open(&dir).unwrap();
    assert!(
        !dir.join("pending").exists(),
        "moved, and the torn one removed"
    );
    assert_eq!(store.read(&pending_hash).unwrap(), pending);
    assert!(
        store.locations.get(&pending_hash).unwrap().is_some(),
        "in a pack"
    );
    assert!(store.contains(&old_hash).unwrap());
    assert_eq!(store.read(&old_hash).unwrap(), old);
    assert_eq!(read_from(&dir, &old_hash).unwrap(), old);
    assert_eq!(len_of(&dir, &old_hash).unwrap(), old.len() as u64);
    store.put(&old_hash, old).unwrap();
    assert_eq!(store.pending_bytes(), 0, "a loose file counts as stored");
    store.remove(&old_hash).unwrap();
    assert!(!dir.join(&old_name[..2]).join(&old_name).exists());
    assert!(!store.contains(&old_hash).unwrap());
}
