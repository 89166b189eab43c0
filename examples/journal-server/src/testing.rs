//! Helpers shared by the unit tests.

use std::path::PathBuf;

/// A fresh, empty directory for one test: `journal-<name>-<pid>` under the system's temporary
/// directory (removed first if an earlier run left it).
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("journal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
