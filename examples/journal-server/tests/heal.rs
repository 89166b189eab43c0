//! A failure of the archive store heals without a restart and without anyone's retry: the
//! server runs on a real, small file system (a tmpfs this test mounts), which is filled up
//! after messages were accepted and before they are archived, then freed again.
//!
//! Mounting needs root; without it the test says so and passes, unless
//! `MAILJOURNAL_REQUIRE_ROOT_TESTS` is set (as `.ci/run` sets it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

mod common;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_journal-server")
}

fn message(n: usize) -> Vec<u8> {
    let body = "x".repeat(200);
    format!(
        "From: alice@contoso.com\r\nTo: bob@contoso.com\r\nMessage-ID: <heal-{n}@contoso.com>\r\nSubject: heal {n}\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

fn count(status: &serde_json::Value, state: &str) -> u64 {
    status["queue"]["counts"][state].as_u64().unwrap_or(0)
}

fn metric(text: &str, name: &str) -> f64 {
    common::metric(text, name).unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Writes zeros into `path` until the file system says it is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
}

#[test]
fn a_full_archive_file_system_heals_without_a_restart_or_a_retry() {
    let dir = std::env::temp_dir().join(format!("journal-heal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&dir)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        assert!(
            std::env::var_os("MAILJOURNAL_REQUIRE_ROOT_TESTS").is_none(),
            "cannot mount a tmpfs, but the test is required"
        );
        println!("heal: skipped, cannot mount a tmpfs here (needs root)");
        return;
    }
    let _mounted = Mounted(dir.clone());
    let data = dir.join("data");
    let config = common::contoso_config(
        &dir,
        "free_space_reserve_bytes = 1048576",
        "description = \"heal\"\njournal_type = \"eml\"",
        "",
    );
    let (mut server, port, admin) =
        common::serve_with_admin(&config, &["--match-interval-seconds", "2"]);
    let ids: Vec<String> = (0..20).map(|n| common::send(port, &message(n))).collect();
    // Full before the first archiving (three attempts two seconds apart: 4 s).
    let filler = dir.join("filler");
    fill(&filler);
    std::thread::sleep(Duration::from_secs(12));
    let during = common::status_json(&data);
    assert_eq!(
        count(&during, "archived"),
        0,
        "archived on a full disk? {during}"
    );
    assert_eq!(during["archive_store"]["state"], "failing", "{during}");
    // While the store fails, every item is in sight, with why it is not archived.
    let shown = during["queue"]["items"].as_array().unwrap();
    for id in &ids {
        let item = shown
            .iter()
            .find(|i| i["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} out of sight while the store fails: {during}"));
        assert_eq!(item["state"], "waiting", "{item}");
        assert!(item["reason"].is_string(), "no reason shown: {item}");
    }
    assert!(server.0.try_wait().unwrap().is_none(), "the server stopped");
    // What a load balancer and a monitoring system see meanwhile.
    let (code, _, why) = common::http(admin, "GET", "/readyz", &[], "");
    assert_eq!(code, 503, "{why}");
    assert!(
        why.contains("below the reserve") || why.contains("archive store is failing"),
        "{why}"
    );
    let (_, _, metrics) = common::http(admin, "GET", "/metrics", &[], "");
    let lag = metric(&metrics, "mailjournal_archive_lag_seconds");
    assert!(lag >= 10.0, "lag {lag} in {metrics}");
    assert_eq!(
        metric(&metrics, "mailjournal_queue_items{state=\"waiting\"}"),
        20.0
    );
    let (_, _, page) = common::http(admin, "GET", "/", &[], "");
    assert!(page.contains("Archive store FAILING since"), "{page}");

    // Space again: every item is archived by the same process, with no retry asked for.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let healed = loop {
        let status = common::status_json(&data);
        if count(&status, "archived") == ids.len() as u64 {
            break status;
        }
        assert!(Instant::now() < deadline, "not healed: {status}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "healed by a restart"
    );
    assert_eq!(healed["archive_store"]["state"], "ok", "{healed}");
    let (code, _, ready) = common::http(admin, "GET", "/readyz", &[], "");
    assert_eq!((code, ready.as_str()), (200, "ready\n"));
    let (_, _, metrics) = common::http(admin, "GET", "/metrics", &[], "");
    assert_eq!(metric(&metrics, "mailjournal_archive_lag_seconds"), 0.0);
    assert_eq!(
        metric(&metrics, "mailjournal_queue_items{state=\"archived\"}"),
        20.0
    );
    let items = healed["queue"]["items"].as_array().unwrap();
    for id in &ids {
        let item = items.iter().find(|i| i["id"] == id.as_str()).unwrap();
        assert_eq!(item["state"], "archived", "{item}");
        assert!(item.get("reason").is_none(), "{item}");
    }
    // And the archived forms are there.
    let out = Command::new(bin())
        .args(["get", "--data-dir", data.to_str().unwrap(), &ids[7]])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Subject: heal 7"));
    server.0.kill().unwrap();
}
