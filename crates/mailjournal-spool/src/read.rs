//! Reading committed messages back: by [`Location`] (what the commit or recovery reported),
//! or by queue id alone, as received.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use mailjournal_queue::ItemId;

use crate::segments::{self, Place};
use crate::{Location, frame};

/// Reads committed messages of one spool, keeping the last log segment it read open: the
/// next message is mostly in the same one.
#[derive(Debug)]
pub struct SpoolReader {
    root: PathBuf,
    open: Option<(u64, File)>,
}

impl SpoolReader {
    /// A reader for the spool in `root` (a running spool's or a stopped one's).
    pub fn new(root: &Path) -> SpoolReader {
        SpoolReader {
            root: root.to_path_buf(),
            open: None,
        }
    }

    /// The bytes of message `id` at `location`: from its record in the log, checked against
    /// the record's CRC and id, or from its data file (live or kept). Never a scan of the log.
    pub fn read(&mut self, id: ItemId, location: Location) -> io::Result<Vec<u8>> {
        let Some(offset) = location.log_offset else {
            return fs::read(segments::data_file(&self.root, id));
        };
        let file = match &mut self.open {
            Some((segment, file)) if *segment == location.segment => file,
            open => {
                let file = segments::open(&self.root, location.segment)?;
                &open.insert((location.segment, file)).1
            }
        };
        read_inline(file, id, location.segment, offset)
    }
}

/// The message bytes inside the commit record at log offset `offset`, in `log`, the open
/// segment `segment`.
fn read_inline(log: &File, id: ItemId, segment: u64, offset: u64) -> io::Result<Vec<u8>> {
    let pos = offset
        .checked_sub(segment)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset before its segment"))?;
    frame::read_inline(log, id, pos)
}

/// The bytes of committed message `id` of the spool in `root`, exactly as received: from its
/// record in the commit log (at `log_offset` when known, else found by a walk of every
/// segment's headers) or from its data file. `NotFound` when the spool does not hold it.
pub fn read_as_received(root: &Path, id: ItemId, log_offset: Option<u64>) -> io::Result<Vec<u8>> {
    if let Some(offset) = log_offset {
        let segment = segments::containing(root, offset)?;
        return read_inline(&segments::open(root, segment)?, id, segment, offset);
    }
    match fs::read(segments::data_file(root, id)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            for place in [Place::Live, Place::Kept] {
                for base in segments::list(root, place)? {
                    let log = segments::open(root, base)?;
                    if let Some(pos) = frame::find_inline(&log, id)? {
                        return frame::read_inline(&log, id, pos);
                    }
                }
            }
            Err(e)
        }
        other => other,
    }
}

/// What the spool in `root` holds on disk (nothing, for a directory without a spool yet).
pub fn usage(root: &Path) -> io::Result<segments::Usage> {
    segments::usage(root)
}
