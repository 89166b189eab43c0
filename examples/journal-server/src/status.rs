//! `status`, `get` and `retry`: views of an archive (a data directory's, or the shared one),
//! safe while the server runs (SQLite read snapshots or PostgreSQL; spool and archive files
//! are written once, then renamed or synced).

use std::io::Write;
use std::process::ExitCode;

use mailjournal::archive::{ArchiveError, ArchiveResult};
use mailjournal::queue::ItemId;
use mailjournal::spool::{Clock, SystemClock};
use mailjournal::status::ArchiveSource;
use serde_json::Value;

pub(crate) fn status(source: &ArchiveSource, as_json: bool, limit: usize) -> ExitCode {
    match read_status(source, limit) {
        Ok(value) => {
            if as_json {
                println!("{value}");
            } else {
                print_text(&value);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", source.data_dir().display());
            ExitCode::from(2)
        }
    }
}

fn read_status(source: &ArchiveSource, limit: usize) -> ArchiveResult<Value> {
    source
        .status(limit, SystemClock.now())
        .map(|report| report.to_json())
}

fn print_text(value: &Value) {
    println!("Service status");
    for c in value["connectors"].as_array().into_iter().flatten() {
        println!(
            "  {:<30} {:<40} {:<10} last message: {}",
            c["description"].as_str().unwrap_or(""),
            c["service_email_address"].as_str().unwrap_or(""),
            c["status"].as_str().unwrap_or(""),
            c["last_message_at"].as_str().unwrap_or("never")
        );
    }
    println!("Queue details");
    if let Some(counts) = value["queue"]["counts"].as_object() {
        let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!(
            "  {}",
            if summary.is_empty() {
                "empty".to_owned()
            } else {
                summary.join(", ")
            }
        );
    }
    let spool = &value["spool"];
    println!(
        "Spool: {} live segment(s), {} (read at start-up); {} kept, {} (for get --as-received)",
        spool["live_segments"],
        megabytes(&spool["live_bytes"]),
        spool["kept_segments"],
        megabytes(&spool["kept_bytes"])
    );
    if value["archive_store"]["state"] == "failing" {
        println!(
            "Archive store FAILING since {}: {}",
            value["archive_store"]["since"].as_str().unwrap_or(""),
            value["archive_store"]["error"].as_str().unwrap_or("")
        );
    }
    let retention = &value["retention"];
    if retention["last_deletion_at"].is_string() {
        println!(
            "Retention: {} archived message(s) and {} as-received segment(s) deleted, last at {}",
            retention["deleted_messages"],
            retention["deleted_as_received_segments"],
            retention["last_deletion_at"].as_str().unwrap_or("")
        );
    }
    for item in value["queue"]["items"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:<12} {}  {} -> {}  {}",
            item["id"].as_str().unwrap_or(""),
            item["state"].as_str().unwrap_or(""),
            item["received_at"].as_str().unwrap_or(""),
            item["sender"].as_str().unwrap_or(""),
            item["recipient"].as_str().unwrap_or(""),
            item["reason"].as_str().unwrap_or("")
        );
    }
}

fn megabytes(bytes: &Value) -> String {
    format!("{:.1} MB", bytes.as_u64().unwrap_or(0) as f64 / 1e6)
}

pub(crate) fn get(source: &ArchiveSource, id: &str, as_received: bool) -> ExitCode {
    let data_dir = source.data_dir();
    let Ok(id) = id.parse::<ItemId>() else {
        eprintln!("unknown id {id}");
        return ExitCode::from(1);
    };
    let item = source.read(|archive| {
        let item = archive.item(id)?;
        let content = match item.as_ref().and_then(|i| i.content) {
            Some(hash) if !as_received => Some(archive.content(&hash)),
            _ => None,
        };
        Ok((content, item))
    });
    let bytes = if as_received {
        // The archive knows where an inline item's record is; without it (an item the
        // archive has not seen yet), the log is walked.
        let offset = item.as_ref().ok().and_then(|(_, i)| i.as_ref()?.log_offset);
        match mailjournal::spool::read_as_received(&data_dir.join("spool"), id, offset) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("unknown id {id}");
                return ExitCode::from(1);
            }
            // Known, but what holds it cannot be read or does not check out (damage, or a
            // permission): saying "unknown" would send the operator looking in the wrong place.
            Err(e) => {
                eprintln!("{id}: its as-received copy cannot be read: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        match item {
            Ok((content, Some(_))) => match content {
                Some(Ok(bytes)) => bytes,
                Some(Err(e)) => {
                    eprintln!("{id}: archived content missing: {e}");
                    return ExitCode::from(2);
                }
                None => {
                    eprintln!("{id} is not archived (yet): see `status`, or use --as-received");
                    return ExitCode::from(1);
                }
            },
            Ok((_, None)) => {
                eprintln!("unknown id {id}");
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("{}: {e}", data_dir.display());
                return ExitCode::from(2);
            }
        }
    };
    let mut out = std::io::stdout().lock();
    if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

/// `retry`: marks a failed item for retry.
pub(crate) fn retry(source: &ArchiveSource, id: &str) -> ExitCode {
    let requested = id
        .parse::<ItemId>()
        .map_err(|_| None)
        .and_then(|parsed| source.request_retry(parsed).map_err(Some));
    match requested {
        Ok(true) => {
            println!("{id}: retry requested");
            ExitCode::SUCCESS
        }
        Ok(false) | Err(None) => {
            eprintln!("{id}: no item with this id that is not settled (or it is held)");
            ExitCode::from(1)
        }
        Err(Some(e)) => {
            eprintln!("{}: {}", source.data_dir().display(), e as ArchiveError);
            ExitCode::from(2)
        }
    }
}
