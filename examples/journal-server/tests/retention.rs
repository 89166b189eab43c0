//! Retention on a running server: archived messages go when their definition's
//! `retention_days` have passed, the as-received copies when `as_received_days` have, and a
//! legal hold keeps what it covers. A "day" lasts two seconds here
//! (`--retention-day-seconds`, hidden, for tests and measurements).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_journal-server")
}

fn message(n: usize, to: &str) -> Vec<u8> {
    format!(
        "From: alice@contoso.com\r\nTo: {to}\r\nMessage-ID: <keep-{n}@contoso.com>\r\nSubject: retention {n}\r\n\r\n{}\r\n",
        "r".repeat(300)
    )
    .into_bytes()
}

/// Files under `dir`, recursively (content files and kept segments).
fn files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                let path = e.path();
                if path.is_dir() { files(&path) } else { 1 }
            })
            .sum()
    })
}

#[test]
fn expired_messages_and_copies_go_and_held_ones_stay() {
    let dir = std::env::temp_dir().join(format!("journal-retention-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let config = common::contoso_config(
        &dir,
        "",
        "description = \"kept briefly\"\njournal_type = \"eml\"\ndelivery_wait_attempts = 1\nretention_days = 3",
        "[retention]\nas_received_days = 1\n[[legal_hold]]\naddress = \"Legal@contoso.com\"\nreason = \"case 42\"\n",
    );
    let check = Command::new(bin())
        .args(["check-config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let (_server, port) = common::serve(
        &config,
        &[
            "--match-interval-seconds",
            "1",
            "--retention-day-seconds",
            "2",
            "--spool-segment-bytes",
            "4096",
        ],
    );
    let held = common::send(port, &message(0, "legal@contoso.com"));
    let ids: Vec<String> = (1..=12)
        .map(|n| common::send(port, &message(n, "bob@contoso.com")))
        .collect();
    let archived = |s: &serde_json::Value| s["queue"]["counts"]["archived"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while archived(&common::status_json(&data)) < 13 {
        assert!(
            Instant::now() < deadline,
            "not archived: {}",
            common::status_json(&data)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let content_files = files(&data.join("archive"));
    assert!(content_files >= 13, "{content_files}");
    // Retention days are 3 "days" of 2 s: the messages go after about 6 s, the held one
    // stays. Spool segments retire once their items settled and left the queue (a prune a
    // minute), and their copies go one "day" after that.
    let deadline = Instant::now() + Duration::from_secs(150);
    let after = loop {
        let s = common::status_json(&data);
        if s["retention"]["deleted_messages"] == 12
            && s["retention"]["deleted_as_received_segments"]
                .as_u64()
                .unwrap_or(0)
                > 0
        {
            break s;
        }
        assert!(Instant::now() < deadline, "not deleted: {s}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let items: Vec<&str> = after["queue"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(items, [held.as_str()], "only the held message is left");
    for id in &ids {
        let (code, _) = common::get(&data, id, false);
        assert_eq!(code, Some(1), "{id} still there");
    }
    assert_eq!(
        common::get(&data, &held, false).0,
        Some(0),
        "the held one is readable"
    );
    assert_eq!(files(&data.join("archive")), 1, "one content file is left");
    // The held message's copy stays, and so does its segment.
    assert!(
        common::get(&data, &held, true).0 == Some(0),
        "held copy gone"
    );
    // Copies in a segment of their own go; those that share the held one's segment, or sit
    // in the one still appended to, stay.
    let gone = ids
        .iter()
        .filter(|id| common::get(&data, id, true).0 == Some(1))
        .count();
    assert!(gone > 0, "no expired as-received copy was deleted");
    let found = Command::new(bin())
        .args([
            "find",
            "--data-dir",
            data.to_str().unwrap(),
            "--recipient",
            "bob@contoso.com",
        ])
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&found.stdout)
    );
}
