//! Pack files, `packs/<N as 16 hex digits>.pack`: append-only, each record a 48-byte header
//! (a magic, the length, the content's SHA-256) and the bytes. The header lets a record be
//! checked against its location when read, and a pack be read without its locations.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use mailjournal_queue::ContentHash;

use super::locations::Location;

/// The bytes before each record's content.
pub(super) const HEADER: u64 = 48;
const MAGIC: &[u8; 8] = b"MJPACK01";

/// The directory of the packs under the content directory `dir`.
pub(super) fn packs_dir(dir: &Path) -> PathBuf {
    dir.join("packs")
}

pub(super) fn pack_path(dir: &Path, pack: u64) -> PathBuf {
    packs_dir(dir).join(format!("{pack:016x}.pack"))
}

/// The pack number a file name stands for, if it is a pack's.
pub(super) fn pack_number(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".pack")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

fn header(hash: &ContentHash, len: u64) -> [u8; HEADER as usize] {
    let mut header = [0; HEADER as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&len.to_le_bytes());
    header[16..].copy_from_slice(&hash.0);
    header
}

/// The pack new content is appended to.
#[derive(Debug)]
pub(super) struct ActivePack {
    pub(super) number: u64,
    file: File,
    /// Where the next record goes: past the last one written whole.
    pub(super) end: u64,
}

impl ActivePack {
    /// Creates pack `number`, which must not exist: a pack is never appended to after a
    /// restart, since its tail may not have survived.
    pub(super) fn create(dir: &Path, number: u64) -> io::Result<ActivePack> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(pack_path(dir, number))?;
        Ok(ActivePack {
            number,
            file,
            end: 0,
        })
    }

    /// Appends a record and says where its bytes are. A failed write leaves `end` where it
    /// was, so that the next record overwrites whatever part of it reached the file.
    pub(super) fn append(&mut self, hash: &ContentHash, bytes: &[u8]) -> io::Result<Location> {
        let len = bytes.len() as u64;
        self.file.write_all_at(&header(hash, len), self.end)?;
        self.file.write_all_at(bytes, self.end + HEADER)?;
        let at = Location {
            pack: self.number,
            offset: self.end + HEADER,
            len,
        };
        self.end += HEADER + len;
        Ok(at)
    }

    pub(super) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    pub(super) fn into_file(self) -> File {
        self.file
    }
}

/// Reads the content at `at`, checking that the record there is the one for `hash`.
pub(super) fn read(dir: &Path, hash: &ContentHash, at: Location) -> io::Result<Vec<u8>> {
    let file = File::open(pack_path(dir, at.pack))?;
    let start = at.offset.checked_sub(HEADER).ok_or_else(|| invalid(at))?;
    let total = usize::try_from(HEADER + at.len).map_err(|_| invalid(at))?;
    let mut record = vec![0; total];
    file.read_exact_at(&mut record, start)?;
    if record[..HEADER as usize] != header(hash, at.len) {
        return Err(invalid(at));
    }
    record.drain(..HEADER as usize);
    Ok(record)
}

/// Whether the record at `at` is whole and holds exactly the content named `hash`.
pub(super) fn intact(dir: &Path, hash: &ContentHash, at: Location) -> bool {
    read(dir, hash, at).is_ok_and(|bytes| crate::hash_of(&bytes) == *hash)
}

fn invalid(at: Location) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "no content record of {} bytes at offset {} of pack {:016x}",
            at.len, at.offset, at.pack
        ),
    )
}

/// Every pack file's number, in order.
pub(super) fn pack_files(dir: &Path) -> io::Result<Vec<u64>> {
    let mut packs = Vec::new();
    for entry in fs::read_dir(packs_dir(dir))? {
        if let Some(n) = entry?.file_name().to_str().and_then(pack_number) {
            packs.push(n);
        }
    }
    packs.sort_unstable();
    Ok(packs)
}
