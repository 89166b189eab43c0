//! `show`, `find` and `export`: what the archive knows, for people. Formatting only: the
//! queries are the archive reader's (`mailjournal::archive::ArchiveReader`).

use std::path::PathBuf;
use std::process::ExitCode;

use mailjournal::archive::{ArchiveReader, ArchiveResult, ArchivedMessage, ItemRow, Query};
use mailjournal::queue::ItemId;
use mailjournal::status::ArchiveSource;
use serde_json::{Value, json};

/// The filters `find` and `export` share.
#[derive(Debug, clap::Args)]
pub(crate) struct Filters {
    /// An address that received the message: any envelope recipient (Bcc included), an
    /// expanded group, or an internal mailbox it is archived for.
    #[arg(long)]
    recipient: Option<String>,
    /// The original's sender.
    #[arg(long)]
    sender: Option<String>,
    /// The original's Message-ID (angle brackets optional).
    #[arg(long)]
    message_id: Option<String>,
    /// Accepted at or after (2026-12-01, or 2026-12-01T10:00:00Z).
    #[arg(long, value_parser = instant)]
    since: Option<mailjournal::queue::Timestamp>,
    /// Accepted before.
    #[arg(long, value_parser = instant)]
    until: Option<mailjournal::queue::Timestamp>,
}

fn instant(text: &str) -> Result<mailjournal::queue::Timestamp, String> {
    mailjournal::queue::Timestamp::parse_utc(text)
        .ok_or_else(|| format!("{text:?}: expected 2026-12-01 or 2026-12-01T10:00:00Z"))
}

impl Filters {
    fn query(&self, limit: Option<usize>) -> Query {
        Query {
            recipient: self.recipient.clone(),
            sender: self.sender.clone(),
            message_id: self
                .message_id
                .as_deref()
                .map(|m| m.trim_start_matches('<').trim_end_matches('>').to_owned()),
            since: self.since,
            until: self.until,
            limit,
        }
    }
}

/// The `show` JSON of an archived message (keys in `docs/CONTRACTS.md`).
/// `item` is the row of the item asked for (a merged report's own state and reason).
fn message_json(
    archive: &dyn ArchiveReader,
    asked: ItemId,
    item: Option<&ItemRow>,
    m: &ArchivedMessage,
) -> ArchiveResult<Value> {
    let recipients: Vec<Value> = m
        .recipients
        .iter()
        .map(|r| {
            json!({
                "address": r.recipient.address,
                "field": r.recipient.field,
                "expanded": r.recipient.expanded,
                "forwarded": r.recipient.forwarded,
                "report": r.report.to_string(),
            })
        })
        .collect();
    let reports: Vec<Value> = m
        .reports
        .iter()
        .map(|r| {
            json!({
                "id": r.id.to_string(),
                "state": r.state.as_str(),
                "definition": r.definition,
                "received_at": r.received_at.rfc3339(),
            })
        })
        .collect();
    Ok(json!({
        "id": m.id.to_string(),
        "requested": asked.to_string(),
        "merged_into": (asked != m.id).then(|| m.id.to_string()),
        "state": item.as_ref().map(|i| i.state.as_str()),
        "reason": item.as_ref().and_then(|i| i.reason.clone()),
        "definition": item.as_ref().map(|i| i.definition.clone()),
        "sender": m.sender,
        "on_behalf_of": m.on_behalf_of,
        "subject": m.subject,
        "message_id": m.message_id,
        "sent_date": m.sent_date,
        "format": m.format,
        "content_sha256": m.content.to_string(),
        "size": archive.content_len(&m.content).ok(),
        "received_at": m.received_at.rfc3339(),
        "archived_at": m.archived_at.rfc3339(),
        "recipients": recipients,
        "mailboxes": m.mailboxes,
        "reports": reports,
    }))
}

fn or_none(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

fn print_message(v: &Value) {
    println!("Archived message {}", or_none(&v["id"]));
    if v["merged_into"].is_string() {
        println!("  (report {} was merged into it)", or_none(&v["requested"]));
    }
    for (label, key) in [
        ("Sender", "sender"),
        ("On behalf of", "on_behalf_of"),
        ("Subject", "subject"),
        ("Message-ID", "message_id"),
        ("Sent", "sent_date"),
        ("Definition", "definition"),
        ("Received", "received_at"),
        ("Archived", "archived_at"),
        ("Content", "content_sha256"),
    ] {
        println!("  {label:<13} {}", or_none(&v[key]));
    }
    println!(
        "  {:<13} {} bytes ({})",
        "Size",
        v["size"],
        or_none(&v["format"])
    );
    println!("Recipients");
    for r in v["recipients"].as_array().into_iter().flatten() {
        let mut line = format!("  {:<9} {}", or_none(&r["field"]), or_none(&r["address"]));
        if let Some(group) = r["expanded"].as_str() {
            line += &format!(" (expanded from {group})");
        }
        if let Some(from) = r["forwarded"].as_str() {
            line += &format!(" (forwarded from {from})");
        }
        println!("{line}  [report {}]", or_none(&r["report"]));
    }
    println!("Reports");
    for r in v["reports"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:<8} {}  {}",
            or_none(&r["id"]),
            or_none(&r["state"]),
            or_none(&r["received_at"]),
            or_none(&r["definition"])
        );
    }
}

pub(crate) fn show(source: &ArchiveSource, id: &str, as_json: bool) -> ExitCode {
    let Ok(asked) = id.parse::<ItemId>() else {
        eprintln!("unknown id {id}");
        return ExitCode::from(1);
    };
    let shown = source.read(|archive| {
        let message = archive.message(asked)?;
        let item = archive.item(asked)?;
        Ok((
            message
                .map(|m| message_json(archive, asked, item.as_ref(), &m))
                .transpose()?,
            item,
        ))
    });
    match shown {
        Ok((Some(value), _)) => {
            if as_json {
                println!("{value}");
            } else {
                print_message(&value);
            }
            ExitCode::SUCCESS
        }
        Ok((None, Some(item))) => {
            let reason = item.reason.map(|r| format!(": {r}")).unwrap_or_default();
            eprintln!(
                "{id} is not archived ({}{reason}); see `status`",
                item.state
            );
            ExitCode::from(1)
        }
        Ok((None, None)) => {
            eprintln!("unknown id {id}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{}: {e}", source.data_dir().display());
            ExitCode::from(2)
        }
    }
}

pub(crate) fn find(
    source: &ArchiveSource,
    filters: &Filters,
    as_json: bool,
    limit: usize,
) -> ExitCode {
    let found = source.read(|archive| {
        let ids = archive.find(&filters.query((limit != 0).then_some(limit)))?;
        ids.into_iter()
            .filter_map(|id| archive.message(id).transpose())
            .collect::<ArchiveResult<Vec<_>>>()
    });
    let messages = match found {
        Ok(messages) => messages,
        Err(e) => {
            eprintln!("{}: {e}", source.data_dir().display());
            return ExitCode::from(2);
        }
    };
    for m in &messages {
        if as_json {
            let value = json!({
                "id": m.id.to_string(),
                "received_at": m.received_at.rfc3339(),
                "sender": m.sender,
                "subject": m.subject,
                "message_id": m.message_id,
                "recipients": m.recipients.len(),
                "reports": m.reports.len(),
            });
            println!("{value}");
        } else {
            println!(
                "{}  {}  {:<30} {}",
                m.id,
                m.received_at.rfc3339(),
                m.sender.as_deref().unwrap_or("-"),
                m.subject.as_deref().unwrap_or("")
            );
        }
    }
    ExitCode::SUCCESS
}

/// How `export` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum ExportFormat {
    /// One mbox file (mboxrd: `From ` lines in the content are quoted with `>`).
    Mbox,
    /// A directory of `<ID>.eml` files.
    Eml,
}

pub(crate) fn export(
    source: &ArchiveSource,
    filters: &Filters,
    format: ExportFormat,
    output: &PathBuf,
    with_envelope: bool,
) -> ExitCode {
    let run = |archive: &dyn ArchiveReader| -> Result<usize, Box<dyn std::error::Error>> {
        let ids = archive.find(&filters.query(None))?;
        let mut mbox = match format {
            ExportFormat::Mbox => Some(std::io::BufWriter::new(std::fs::File::create(output)?)),
            ExportFormat::Eml => {
                std::fs::create_dir_all(output)?;
                None
            }
        };
        let mut written = 0;
        // Oldest first: the order mail readers expect in a mailbox.
        for id in ids.into_iter().rev() {
            let Some(m) = archive.message(id)? else {
                continue;
            };
            let mut bytes = if with_envelope {
                mailjournal::archive::export::envelope_block(&m)
            } else {
                Vec::new()
            };
            bytes.extend_from_slice(&archive.content(&m.content)?);
            match &mut mbox {
                Some(out) => mailjournal::archive::export::append_mbox(out, &m, &bytes)?,
                None => std::fs::write(output.join(format!("{}.eml", m.id)), &bytes)?,
            }
            written += 1;
        }
        if let Some(out) = mbox {
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        Ok(written)
    };
    // The reader's errors are archive errors; the rest (files) are carried through it.
    let mut outcome = None;
    let read = source.read(|archive| {
        outcome = Some(run(archive));
        Ok(())
    });
    let result = match (read, outcome) {
        (Err(e), _) => Err(Box::new(e) as Box<dyn std::error::Error>),
        (Ok(()), Some(result)) => result,
        (Ok(()), None) => Ok(0),
    };
    match result {
        Ok(n) => {
            eprintln!("exported {n} message(s) to {}", output.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("export: {e}");
            ExitCode::from(2)
        }
    }
}
