//! The commit-log frame: `[json len u32][data len u32][crc32 of json and data u32]`,
//! little-endian, then the record's metadata (JSON) and, for a small message, its bytes.
//!
//! Reading never trusts a header: lengths beyond what the writer produces are damage, not an
//! allocation, and a frame counts only when its CRC and its metadata check out.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use mailjournal_queue::ItemId;

use crate::{INLINE_LIMIT, Record};

/// The longest record metadata (JSON) read back from the log: far above what a transaction
/// with the session's recipient limit produces, and a bound on what a damaged header can make
/// recovery allocate.
pub(crate) const MAX_RECORD_JSON: usize = 1024 * 1024;

/// A frame's header: JSON length, data length, CRC-32 of both.
pub(crate) const FRAME_HEAD: usize = 12;

/// The header of a frame holding `json` and `data`.
pub(crate) fn frame_head(json: &[u8], data: &[u8]) -> [u8; FRAME_HEAD] {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(json);
    hasher.update(data);
    let mut head = [0u8; FRAME_HEAD];
    head[0..4].copy_from_slice(&(json.len() as u32).to_le_bytes());
    head[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
    head[8..12].copy_from_slice(&hasher.finalize().to_le_bytes());
    head
}

/// Appends every slice, in order, with as few system calls as the kernel allows (the frames
/// of a batch go out in one `writev`, without being copied together first).
pub(crate) fn append_all(log: &mut File, mut slices: &mut [io::IoSlice<'_>]) -> io::Result<()> {
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

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// A frame header whose lengths are within what the server writes.
pub(crate) struct FrameHead {
    pub(crate) json_len: usize,
    pub(crate) data_len: usize,
    crc: u32,
}

impl FrameHead {
    /// Where the next frame starts, for a frame starting at `pos`.
    pub(crate) fn end(&self, pos: u64) -> u64 {
        pos + (FRAME_HEAD + self.json_len + self.data_len) as u64
    }
}

/// One intact frame read back from a segment.
pub(crate) struct Frame {
    /// Its metadata; its location's `log_offset` is still relative to the segment.
    pub(crate) record: Record,
    /// The inline message bytes (empty for a message in its own data file).
    pub(crate) data: Vec<u8>,
    /// Where the next frame starts.
    pub(crate) next: u64,
}

/// Fills `buf` from `offset`; false when the file ends first.
pub(crate) fn read_exact_or_eof(log: &File, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    match log.read_exact_at(buf, offset) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The header at `pos`, if the file holds one there with plausible lengths.
pub(crate) fn read_head(log: &File, pos: u64) -> io::Result<Option<FrameHead>> {
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

/// The header and body (metadata, then data) of the frame at `pos`, if it is whole and its
/// CRC checks out.
fn read_checked(log: &File, pos: u64) -> io::Result<Option<(FrameHead, Vec<u8>)>> {
    let Some(head) = read_head(log, pos)? else {
        return Ok(None);
    };
    let mut body = vec![0u8; head.json_len + head.data_len];
    if !read_exact_or_eof(log, &mut body, pos + FRAME_HEAD as u64)?
        || crc32fast::hash(&body) != head.crc
    {
        return Ok(None);
    }
    Ok(Some((head, body)))
}

/// The frame at `pos`, if it is whole and checks out (CRC, then metadata, then its id).
pub(crate) fn read_frame(log: &File, pos: u64) -> io::Result<Option<Frame>> {
    let Some((head, mut body)) = read_checked(log, pos)? else {
        return Ok(None);
    };
    // The id names files (data, quarantine): anything but a queue id fails to parse, so it
    // is damage, never a path.
    let Ok(mut record) = serde_json::from_slice::<Record>(&body[..head.json_len]) else {
        return Ok(None);
    };
    if record.inline_data {
        record.location.log_offset = Some(pos);
    }
    body.drain(..head.json_len);
    Ok(Some(Frame {
        record,
        data: body,
        next: head.end(pos),
    }))
}

/// Every intact frame of a segment, in order, skipping damaged ones that a readable header
/// steps over; stops where no plausible header follows.
pub(crate) fn for_each_frame(log: &File, mut each: impl FnMut(Frame)) -> io::Result<()> {
    let mut pos = 0;
    loop {
        if let Some(frame) = read_frame(log, pos)? {
            pos = frame.next;
            each(frame);
        } else if let Some(head) = read_head(log, pos)? {
            pos = head.end(pos);
        } else {
            return Ok(());
        }
    }
}

/// What reading a message back checks of its frame's record, parsed without the rest: the
/// whole [`Record`] (its envelope flattened into it) has serde buffer every field first, which
/// was a third of the read's CPU.
#[derive(serde::Deserialize)]
struct Identity {
    #[serde(deserialize_with = "crate::id_text::deserialize")]
    id: ItemId,
    #[serde(default)]
    inline_data: bool,
}

/// The message bytes inside the frame at `pos` of a segment, checked against the frame's CRC
/// and the record's id.
pub(crate) fn read_inline(log: &File, id: ItemId, pos: u64) -> io::Result<Vec<u8>> {
    if let Some((head, mut body)) = read_checked(log, pos)?
        && let Ok(found) = serde_json::from_slice::<Identity>(&body[..head.json_len])
        && found.id == id
        && found.inline_data
    {
        body.drain(..head.json_len);
        return Ok(body);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "commit record does not match",
    ))
}

/// Where the frame of inline item `id` starts in a segment, found by walking the frames'
/// headers and metadata (not their data).
pub(crate) fn find_inline(log: &File, id: ItemId) -> io::Result<Option<u64>> {
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
