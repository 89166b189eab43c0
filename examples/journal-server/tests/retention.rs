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

/// Every file's bytes under `dir`, recursively.
fn bytes_under(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all.extend(bytes_under(&path));
        } else {
            all.extend(std::fs::read(&path).unwrap_or_default());
        }
    }
    all
}

/// Which of messages `0..=12` (by their subject line) the archive's content holds.
fn stored(data: &Path) -> Vec<usize> {
    let all = bytes_under(&data.join("archive"));
    (0..=12)
        .filter(|n| {
            let line = format!("Subject: retention {n}\r\n");
            all.windows(line.len()).any(|w| w == line.as_bytes())
        })
        .collect()
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
    assert_eq!(stored(&data), (0..=12).collect::<Vec<_>>());
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
    // Erased from the content store, not only forgotten: the held one's alone is left.
    assert_eq!(stored(&data), [0]);
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
