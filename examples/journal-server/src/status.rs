//! `status`, `get` and `retry`: views of a data directory, safe while the server runs
//! (SQLite read snapshots; spool and archive files are written once, then renamed or synced).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use mailjournal::archive::embedded::Reader;
use mailjournal::archive::{ArchiveError, ArchiveResult};
use mailjournal::queue::{Connector, Duration, ItemId};
use mailjournal::spool::{Clock, SystemClock};
use serde_json::{Value, json};

/// The reason shown for a spooled message the archive has not recorded.
const UNRECORDED: &str =
    "accepted and spooled; the failing archive store has not recorded it yet (see the log)";

pub(crate) fn status(data_dir: &Path, as_json: bool, limit: usize) -> ExitCode {
    match read_status(data_dir, limit) {
        Ok(value) => {
            if as_json {
                println!("{value}");
            } else {
                print_text(&value);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", data_dir.display());
            ExitCode::from(2)
        }
    }
}

fn read_status(data_dir: &Path, limit: usize) -> ArchiveResult<Value> {
    let archive = Reader::open(data_dir)?;
    let now = SystemClock.now();
    let connectors: Vec<Value> = archive
        .connectors()?
        .into_iter()
        .map(|c| {
            let period = Duration::minutes(u64::from(c.period_minutes));
            let status =
                Connector::restore(period, c.disabled, c.last_message_at, now).status_at(now);
            json!({
                "description": c.description,
                "service_email_address": c.service_email_address,
                "status": status.name(),
                "last_message_at": c.last_message_at.map(mailjournal::queue::Timestamp::rfc3339),
            })
        })
        .collect();
    let mut counts: serde_json::Map<String, Value> = archive
        .counts()?
        .into_iter()
        .map(|(state, n)| (state.as_str().to_owned(), json!(n)))
        .collect();
    // When the archive store fails (a full disk, say) it cannot record why; the engine's
    // health file, overwritten in place, still says it.
    let health = mailjournal::engine::read_health(&mailjournal::engine::health_path(data_dir));
    let failing = matches!(
        health,
        Some(mailjournal::engine::StoreHealth::Failing { .. })
    );
    // While it fails, the messages the spool holds that the index has not recorded (a failed
    // transaction lost them) are shown too, so that nothing accepted is out of sight. Not
    // otherwise: then a record the index lacks is one just committed, or one retention
    // deleted while its segment is still live.
    let live = if failing {
        mailjournal::spool::live_records(&data_dir.join("spool")).unwrap_or_default()
    } else {
        Vec::new()
    };
    let unrecorded: Vec<Value> = live
        .into_iter()
        .rev()
        .filter(|r| matches!(archive.item(r.id), Ok(None)))
        .map(|r| {
            let journal = r
                .envelope
                .journal
                .clone()
                .or(r.envelope.recipients.first().cloned());
            json!({
                "id": r.id.to_string(),
                "state": mailjournal::queue::StateName::Waiting.as_str(),
                "definition": journal,
                "sender": r.envelope.mail_from.as_deref().unwrap_or("<>"),
                "recipient": journal,
                "received_at": r.envelope.received_at.rfc3339(),
                "attempts": 0,
                "reason": UNRECORDED,
            })
        })
        .collect();
    if !unrecorded.is_empty() {
        let waiting = counts.get("waiting").and_then(Value::as_u64).unwrap_or(0);
        counts.insert(
            "waiting".to_owned(),
            json!(waiting + unrecorded.len() as u64),
        );
    }
    let oldest_pending_age = archive
        .oldest_pending()?
        .map(|t| now.since(t).as_millis() / 1000);
    let mut items: Vec<Value> = unrecorded;
    items.extend(
        archive
            .items((limit != 0).then_some(limit))?
            .into_iter()
            .map(|item| {
                let mut value = json!({
                    "id": item.id.to_string(),
                    "state": item.state.as_str(),
                    "definition": item.definition,
                    "sender": item.sender,
                    "recipient": item.recipient,
                    "received_at": item.received_at.rfc3339(),
                    "attempts": item.attempts,
                });
                if let Some(reason) = item.reason {
                    value["reason"] = json!(reason);
                }
                value
            }),
    );
    if limit != 0 {
        items.truncate(limit);
    }
    let archive_store = match &health {
        Some(mailjournal::engine::StoreHealth::Failing { since, error }) => {
            let reason =
                format!("the archive store is failing: {error} (tried again automatically)");
            for item in &mut items {
                let settled = item["state"]
                    .as_str()
                    .and_then(|s| s.parse::<mailjournal::queue::StateName>().ok())
                    .is_some_and(|s| s.is_settled());
                if !settled && !item["reason"].is_string() {
                    item["reason"] = json!(reason);
                }
            }
            json!({"state": "failing", "since": *since.rfc3339(), "error": error})
        }
        Some(mailjournal::engine::StoreHealth::Ok) => json!({"state": "ok"}),
        None => Value::Null,
    };
    // A data directory without a spool yet (the server never ran) holds nothing there.
    let spool = mailjournal::spool::usage(&data_dir.join("spool")).unwrap_or_default();
    let retention = archive.retention()?;
    Ok(json!({
        "connectors": connectors,
        "queue": {"counts": counts, "oldest_pending_age_seconds": oldest_pending_age, "items": items},
        "spool": {
            "live_segments": spool.live_segments,
            "live_bytes": spool.live_bytes,
            "kept_segments": spool.kept_segments,
            "kept_bytes": spool.kept_bytes,
        },
        "archive_store": archive_store,
        "retention": {
            "deleted_messages": retention.deleted_messages,
            "deleted_as_received_segments": retention.deleted_segments,
            "last_deletion_at": retention.last_deletion_at.map(mailjournal::queue::Timestamp::rfc3339),
        },
    }))
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

pub(crate) fn get(data_dir: &Path, id: &str, as_received: bool) -> ExitCode {
    let Ok(id) = id.parse::<ItemId>() else {
        eprintln!("unknown id {id}");
        return ExitCode::from(1);
    };
    let item = Reader::open(data_dir).and_then(|archive| {
        let item = archive.item(id)?;
        Ok((archive, item))
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
            Ok((archive, Some(row))) => match row.content {
                Some(hash) => match archive.content(&hash) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        eprintln!("{id}: archived content missing: {e}");
                        return ExitCode::from(2);
                    }
                },
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
pub(crate) fn retry(data_dir: &Path, id: &str) -> ExitCode {
    let requested = id.parse::<ItemId>().map_err(|_| None).and_then(|parsed| {
        mailjournal::archive::embedded::request_retry(data_dir, parsed).map_err(Some)
    });
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
            eprintln!("{}: {}", data_dir.display(), e as ArchiveError);
            ExitCode::from(2)
        }
    }
}
