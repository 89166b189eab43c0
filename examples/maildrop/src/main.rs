//! `maildrop`: archives journal reports dropped into a directory, through the same engine as
//! the SMTP server: the engine's public API is all it uses.
//!
//! ```text
//! maildrop CONFIG DATA_DIR INBOX
//! ```
//!
//! Every file in `INBOX` is one journal report (or plain message) for the configuration's
//! first enabled journal definition. Each is written to the spool and committed; only once its
//! commit is durable is the file removed from `INBOX`, so a crash at any point loses nothing
//! (a file committed but not yet removed is archived twice, which de-duplication merges).
//! `maildrop` then waits until every report it committed is settled in the archive (the
//! definition's match attempts included), prints one line per report (`<file> <queue id>
//! <state>`) and exits 0; 1 when a report failed, 2 when it could not start.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailjournal::archive::embedded::Reader;
use mailjournal::definition::{Config, Policy};
use mailjournal::engine::{Engine, EngineOptions};
use mailjournal::queue::{ItemId, StateName};
use mailjournal::spool::{Clock, Envelope, SystemClock};

/// How long `maildrop` waits for the archive to settle what it committed.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(600);

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [config, data_dir, inbox] = args.as_slice() else {
        eprintln!("usage: maildrop CONFIG DATA_DIR INBOX");
        return ExitCode::from(2);
    };
    match run(config, data_dir, inbox) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("maildrop: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(config: &Path, data_dir: &Path, inbox: &Path) -> Result<bool, Box<dyn std::error::Error>> {
    let config = Config::from_toml(&std::fs::read_to_string(config)?)?;
    let (policy, _warnings) = Policy::from_config(&config).map_err(|report| report.to_string())?;
    let journal = policy
        .journals
        .iter()
        .find(|j| !j.definition.disabled)
        .ok_or("no enabled journal definition")?
        .service_address
        .to_string();
    let mut options = EngineOptions::new(data_dir);
    // Match attempts a second apart: a drop directory is drained, not a live feed.
    options.attempt_interval = mailjournal::queue::Duration::seconds(1);
    let (engine, _) = Engine::open_embedded(Arc::new(policy), data_dir, options)?;

    let mut committed: Vec<(String, ItemId)> = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(inbox)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    for file in files.into_iter().filter(|f| f.is_file()) {
        let mut message = engine.spool().begin();
        message.write(&std::fs::read(&file)?)?;
        let envelope = Envelope {
            peer: "maildrop".into(),
            ..Envelope::new(&journal, SystemClock.now())
        };
        let done = engine.spool().commit(message, envelope).wait()?;
        // Durable now: the drop directory's copy is no longer needed.
        std::fs::remove_file(&file)?;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        committed.push((name.unwrap_or_default(), done.id));
    }

    let archive = Reader::open(data_dir)?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let states = loop {
        let states = committed
            .iter()
            .map(|(_, id)| Ok(archive.item(*id)?.map(|i| i.state)))
            .collect::<Result<Vec<_>, mailjournal::archive::ArchiveError>>()?;
        let done =
            |s: &Option<StateName>| s.is_some_and(|s| s.is_settled() || s == StateName::Failed);
        if states.iter().all(done) {
            break states;
        }
        if let Some(failure) = engine.failure() {
            return Err(failure.into());
        }
        if Instant::now() > deadline {
            return Err("the archive did not settle every report in time".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    engine.shutdown();
    let mut all_settled = true;
    for ((file, id), state) in committed.iter().zip(states) {
        let state = state.map_or("unknown", StateName::as_str);
        all_settled &= state != StateName::Failed.as_str();
        println!("{file} {id} {state}");
    }
    Ok(all_settled)
}
