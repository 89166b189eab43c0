//! `maildrop` run as a user would: a configuration file, a drop directory of messages, then
//! the archive read back through the archive's own reader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use mailjournal::archive::embedded::Reader;
use mailjournal::definition::{JournalType, provision};
use mailjournal::queue::{ItemId, StateName};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("maildrop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn message(from: &str, to: &str, id: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: drop\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{id}>\r\n\r\nhello\r\n"
    )
}

fn run(config: &Path, data: &Path, inbox: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_maildrop"))
        .args([config, data, inbox])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.code().is_some(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), stdout)
}

#[test]
fn dropped_messages_are_archived_merged_or_dropped_through_the_engine() {
    let dir = temp_dir("archive");
    let (inbox, data) = (dir.join("inbox"), dir.join("data"));
    std::fs::create_dir_all(&inbox).unwrap();
    let mut config = provision::starter_config("contoso.com").unwrap();
    config.journal[0].journal_type = JournalType::Eml;
    config.journal[0].delivery_wait_attempts = 1;
    let config_file = dir.join("journal.toml");
    std::fs::write(&config_file, config.to_toml().unwrap()).unwrap();
    let internal = message("alice@contoso.com", "bob@contoso.com", "1@contoso.com");
    std::fs::write(inbox.join("a.eml"), &internal).unwrap();
    // A second report of the same message (same Message-ID and date): merged into the first.
    std::fs::write(inbox.join("b.eml"), &internal).unwrap();
    // Nobody internal: the archive policy drops it.
    let outside = message("x@fabrikam.com", "y@fabrikam.com", "2@fabrikam.com");
    std::fs::write(inbox.join("c.eml"), outside).unwrap();

    let (code, stdout) = run(&config_file, &data, &inbox);
    assert_eq!(code, Some(0), "{stdout}");
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split(' ').collect()).collect();
    let states: Vec<(&str, &str)> = lines.iter().map(|l| (l[0], l[2])).collect();
    assert_eq!(
        states,
        [
            ("a.eml", "archived"),
            ("b.eml", "merged"),
            ("c.eml", "not_archived")
        ]
    );
    assert_eq!(
        std::fs::read_dir(&inbox).unwrap().count(),
        0,
        "every committed file is removed"
    );
    // What maildrop printed is what the archive holds, and the archived form is the message.
    let archive = Reader::open(&data).unwrap();
    let first: ItemId = lines[0][1].parse().unwrap();
    let item = archive.item(first).unwrap().unwrap();
    assert_eq!(item.state, StateName::Archived);
    assert_eq!(
        archive.content(&item.content.unwrap()).unwrap(),
        internal.as_bytes()
    );

    // Run again on an empty inbox: nothing to do, the archive kept.
    let (code, stdout) = run(&config_file, &data, &inbox);
    assert_eq!((code, stdout.as_str()), (Some(0), ""));
    assert_eq!(
        archive.item(first).unwrap().unwrap().state,
        StateName::Archived
    );
}
