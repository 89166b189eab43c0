//! `status` and `get`: read-only views of a data directory, safe while the server runs
//! (SQLite read snapshots; spool and archive files are written once, then renamed or synced).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use mailjournal::queue::{Connector, Duration, Timestamp};
use rusqlite::OptionalExtension;
use serde_json::{Value, json};

use crate::clock;
use crate::store;

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

fn read_status(data_dir: &Path, limit: usize) -> rusqlite::Result<Value> {
    let db = store::open_read_only(data_dir)?;
    let now = clock::now();
    let mut stmt = db.prepare("SELECT description, service_email_address, disabled, period_minutes, last_message_at FROM connectors ORDER BY position")?;
    let connectors = stmt
        .query_map([], |r| {
            let description: String = r.get(0)?;
            let address: String = r.get(1)?;
            let disabled: bool = r.get(2)?;
            let period: i64 = r.get(3)?;
            let last: Option<i64> = r.get(4)?;
            let last = last.map(|t| Timestamp(t as u64));
            let status = Connector::restore(Duration::minutes(period as u64), disabled, last, now)
                .status_at(now);
            Ok(json!({
                "description": description,
                "service_email_address": address,
                "status": status.name(),
                "last_message_at": last.map(clock::rfc3339),
            }))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut counts = serde_json::Map::new();
    // A database the server has not opened since counts were kept is counted the long way.
    let mut stmt = db.prepare(if store::keeps_item_counts(&db)? {
        store::KEPT_COUNTS
    } else {
        store::COUNTED
    })?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (state, n) = row?;
        counts.insert(state, json!(n));
    }
    let oldest: Option<i64> = db.query_row(
        "SELECT MIN(received_at) FROM items WHERE state NOT IN ('archived', 'merged', 'not_archived', 'expired')",
        [],
        |r| r.get(0),
    )?;
    let oldest_pending_age = oldest.map(|t| now.since(Timestamp(t as u64)).as_millis() / 1000);
    let sql = "SELECT id, state, definition, sender, recipient, received_at, attempts, reason FROM items ORDER BY received_at DESC, id DESC LIMIT ?1";
    let limit = if limit == 0 { -1 } else { limit as i64 };
    let mut stmt = db.prepare(sql)?;
    let items = stmt
        .query_map([limit], |r| {
            let received: i64 = r.get(5)?;
            let mut item = json!({
                "id": r.get::<_, String>(0)?,
                "state": r.get::<_, String>(1)?,
                "definition": r.get::<_, String>(2)?,
                "sender": r.get::<_, String>(3)?,
                "recipient": r.get::<_, String>(4)?,
                "received_at": clock::rfc3339(Timestamp(received as u64)),
                "attempts": r.get::<_, i64>(6)?,
            });
            if let Some(reason) = r.get::<_, Option<String>>(7)? {
                item["reason"] = json!(reason);
            }
            Ok(item)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // A data directory without a spool yet (the server never ran) holds nothing there.
    let spool = crate::serve::spool::usage(data_dir).unwrap_or_default();
    Ok(json!({
        "connectors": connectors,
        "queue": {"counts": counts, "oldest_pending_age_seconds": oldest_pending_age, "items": items},
        "spool": spool,
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
    let bytes = if as_received {
        if crate::serve::spool::parse_id(id).is_none() {
            eprintln!("unknown id {id}");
            return ExitCode::from(1);
        }
        // The store knows where an inline item's record is; without it (an item the store has
        // not seen yet), the log is walked.
        let offset = store::open_read_only(data_dir)
            .and_then(|db| store::log_offset(&db, id))
            .unwrap_or(None);
        match crate::serve::spool::read_data(data_dir, id, offset) {
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
        let sha: rusqlite::Result<Option<Option<String>>> = store::open_read_only(data_dir)
            .and_then(|db| {
                db.query_row(
                    "SELECT content_sha256 FROM items WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .optional()
            });
        match sha {
            Ok(Some(Some(sha))) => match store::read_content(data_dir, &sha) {
                Ok(bytes) => bytes,
                Err(e) => {
                    eprintln!("{id}: archived content missing: {e}");
                    return ExitCode::from(2);
                }
            },
            Ok(Some(None)) => {
                eprintln!("{id} is not archived (yet): see `status`, or use --as-received");
                return ExitCode::from(1);
            }
            Ok(None) => {
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
