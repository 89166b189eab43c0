//! One server per data directory.
//!
//! A second `serve` on a data directory in use would run spool recovery under the first one:
//! it removes data files that no record commits yet (the first server's messages still
//! arriving, which it then acknowledges without their bytes) and cuts what looks like a torn
//! tail. So `serve` takes an exclusive `flock` on `DATA_DIR/serve.lock` before it reads
//! anything, and holds it for as long as it runs; the kernel drops it when the process ends,
//! however it ends (`kill -9` included), so there is no stale lock to clean up. The file holds
//! the owner's pid, for the message the next one prints. `status`, `get` and `retry` take no
//! lock: they work beside a running server.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::error::ServeError;

/// Held while the server runs: the data directory is this process's.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the data directory, or says which process has it.
    pub(crate) fn acquire(data_dir: &Path) -> Result<DataDirLock, ServeError> {
        let path = data_dir.join("serve.lock");
        let fail = |source: std::io::Error| ServeError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(fail)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                let owner = if owner.is_empty() { "?" } else { owner };
                return Err(ServeError::InUse {
                    dir: data_dir.to_path_buf(),
                    owner: owner.to_owned(),
                });
            }
            Err(e) => return Err(fail(e.into())),
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .map_err(fail)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_has_one_owner_at_a_time() {
        let dir = std::env::temp_dir().join(format!("journal-data-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let first = DataDirLock::acquire(&dir).unwrap();
        // flock locks belong to the open file, so a second open in this process is refused
        // just as another process would be.
        let refused = DataDirLock::acquire(&dir).unwrap_err();
        let refused = refused.to_string();
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        drop(first);
        DataDirLock::acquire(&dir).expect("free again once the owner is gone");
    }
}
