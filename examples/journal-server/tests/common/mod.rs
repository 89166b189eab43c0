//! What more than one integration test needs.

use std::path::Path;
use std::process::Command;

/// Runs `journal-server get` for `id` (archived form, or `as_received`): its exit code and
/// what it printed.
pub(crate) fn get(data_dir: &Path, id: &str, as_received: bool) -> (Option<i32>, Vec<u8>) {
    let mut args = vec!["get", "--data-dir", data_dir.to_str().unwrap(), id];
    if as_received {
        args.push("--as-received");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_journal-server"))
        .args(&args)
        .output()
        .unwrap();
    (out.status.code(), out.stdout)
}
