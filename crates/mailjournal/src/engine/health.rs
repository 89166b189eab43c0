//! The archive store's health where other processes can read it even when the store cannot
//! be written: a file of fixed size, allocated (zeros written) when the engine opens, then
//! only overwritten in place, so that a full file system still takes the news that it is
//! full. `status` reads it to say why items wait.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use mailjournal_queue::Timestamp;

/// The file's size: one JSON object, padded with spaces.
const SIZE: usize = 4096;

/// The archive store's health as the engine last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// Working.
    Ok,
    /// Failing since `since`, with the last error.
    Failing {
        /// When it began failing.
        since: Timestamp,
        /// What failed, last.
        error: String,
    },
}

/// The writer's side.
#[derive(Debug)]
pub(super) struct HealthFile {
    file: File,
    failing_since: Option<Timestamp>,
}

impl HealthFile {
    /// Creates (or takes over) the file and says the store works.
    pub(super) fn open(path: &Path) -> io::Result<HealthFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // Real zeros, not a hole: overwriting them later needs no new blocks.
        file.write_all_at(&[0u8; SIZE], 0)?;
        let mut health = HealthFile {
            file,
            failing_since: None,
        };
        health.write(&StoreHealth::Ok);
        Ok(health)
    }

    /// The store failed, at `now`.
    pub(super) fn failing(&mut self, error: &str, now: Timestamp) {
        let since = *self.failing_since.get_or_insert(now);
        self.write(&StoreHealth::Failing {
            since,
            error: error.to_owned(),
        });
    }

    /// The store works (again).
    pub(super) fn ok(&mut self) {
        if self.failing_since.take().is_some() {
            self.write(&StoreHealth::Ok);
        }
    }

    fn write(&mut self, health: &StoreHealth) {
        let written = match health {
            StoreHealth::Ok => Written {
                state: "ok".into(),
                since: None,
                error: None,
            },
            StoreHealth::Failing { since, error } => Written {
                state: "failing".into(),
                since: Some(since.0),
                error: Some(error.chars().take(SIZE / 2).collect()),
            },
        };
        let Ok(mut page) = serde_json::to_vec(&written) else {
            return;
        };
        page.resize(SIZE, b' ');
        // Informational: a write that fails (or is lost) costs a status line, nothing else.
        let _ = self.file.write_all_at(&page, 0);
    }
}

/// The file's JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct Written {
    state: String,
    since: Option<u64>,
    error: Option<String>,
}

/// Reads the health file at `path` (`None` when there is none, or it cannot be read).
pub fn read_health(path: &Path) -> Option<StoreHealth> {
    let bytes = std::fs::read(path).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let written: Written =
        serde_json::from_str(text.trim_matches(|c: char| c == ' ' || c == '\0')).ok()?;
    match (written.state.as_str(), written.since, written.error) {
        ("ok", ..) => Some(StoreHealth::Ok),
        ("failing", Some(since), Some(error)) => Some(StoreHealth::Failing {
            since: Timestamp(since),
            error,
        }),
        _ => None,
    }
}

/// Where an engine over data directory `data_dir` keeps its health file.
pub fn health_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("archive-health")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_round_trips_in_a_file_of_fixed_size() {
        let dir = std::env::temp_dir().join(format!("engine-health-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = health_path(&dir);
        let mut health = HealthFile::open(&path).unwrap();
        assert_eq!(read_health(&path), Some(StoreHealth::Ok));
        health.failing("disk \"full\" \\ here", Timestamp(5));
        health.failing("still", Timestamp(9));
        assert_eq!(
            read_health(&path),
            Some(StoreHealth::Failing {
                since: Timestamp(5),
                error: "still".into()
            })
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), SIZE as u64);
        health.failing("disk \"full\" \\ here", Timestamp(10));
        assert!(
            matches!(read_health(&path), Some(StoreHealth::Failing { error, .. }) if error == "disk \"full\" \\ here")
        );
        health.ok();
        assert_eq!(read_health(&path), Some(StoreHealth::Ok));
        assert_eq!(read_health(&dir.join("none")), None);
    }
}
