//! `inspect FILE...`: one JSON object per file, per the contract in DESIGN.md.

use std::path::Path;
use std::process::ExitCode;

use mailjournal::envelope::{JournalItem, ParseOptions};
use serde_json::{Value, json};

/// The contract's JSON object for one parsed item.
pub(crate) fn item_json(file: &str, item: &JournalItem<'_>, options: &ParseOptions) -> Value {
    let recipients: Vec<Value> = item
        .recipients()
        .iter()
        .map(|r| {
            json!({
                "address": r.address,
                "field": r.field.as_str(),
                "expanded": r.expanded,
                "forwarded": r.forwarded,
            })
        })
        .collect();
    let original = item.archived_span(options).map(|(span, clear_text)| {
        json!({"offset": span.offset, "length": span.length, "clear_text": clear_text})
    });
    json!({
        "file": file,
        "format": item.format().as_str(),
        "step_down": item.step_down().map(|s| s.code()),
        "report_version": item.report_version().map(|v| v.as_str()),
        "unwrapped_ndr": item.unwrapped_ndr(),
        "sender": item.sender(),
        "on_behalf_of": item.on_behalf_of(),
        "subject": item.subject(),
        "message_id": item.message_id(),
        "recipients": recipients,
        "original": original,
        "warnings": item.warnings(),
    })
}

pub(crate) fn inspect(files: &[std::path::PathBuf], options: &ParseOptions) -> ExitCode {
    let mut status = ExitCode::SUCCESS;
    for file in files {
        match std::fs::read(file) {
            Ok(bytes) => {
                let item = JournalItem::parse(&bytes, options);
                println!("{}", item_json(&display(file), &item, options));
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                status = ExitCode::from(2);
            }
        }
    }
    status
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
