//! Two receivers on one shared archive (real PostgreSQL and Garage, started by
//! `.ci/shared-backend.sh`): the two reports of one message sent to both nodes at the same
//! moment end as one archived message with every recipient of both, round after round; and
//! while PostgreSQL is down a node keeps accepting, then archives everything once it is back,
//! without a restart. Without `MAILJOURNAL_TEST_POSTGRES_URL` the tests say they skipped,
//! unless `MAILJOURNAL_REQUIRE_SHARED` is set (as `.ci/run` sets it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;

const FIXTURE: &str = "onprem_to_cc_bcc_expanded_forwarded_onbehalf.eml";
const FIXTURE_MESSAGE_ID: &str = "DM6PR01MB1234ABCD@DM6PR01MB1234.namprd01.prod.outlook.com";

/// One test at a time: the outage stops the database both use.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn backend() -> Option<String> {
    match std::env::var("MAILJOURNAL_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("MAILJOURNAL_REQUIRE_SHARED").is_none(),
                "MAILJOURNAL_REQUIRE_SHARED is set but the shared backend is not started"
            );
            println!("shared backend not started: skipped (bash .ci/shared-backend.sh start)");
            None
        }
    }
}

fn psql(query: &str) -> Option<String> {
    let url = std::env::var("MAILJOURNAL_TEST_POSTGRES_URL").unwrap();
    let bin = std::env::var("MAILJOURNAL_SHARED_PG_BIN").unwrap_or_else(|_| "/usr/bin".into());
    let out = Command::new(format!("{bin}/psql"))
        .args([url.as_str(), "-At", "-c", query])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// A node's configuration: the contoso definition, archive on the shared backend.
fn node(dir: &Path, name: &str, url: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let var = |n: &str| std::env::var(n).unwrap();
    common::contoso_config(
        dir,
        "",
        "description = \"Microsoft 365\"\ndelivery_wait_attempts = 1",
        &format!(
            "[archive]\nbackend = \"shared\"\nnode_name = \"{name}\"\npostgres_url = \"{url}\"\n\
             s3_endpoint = \"{}\"\ns3_region = \"{}\"\ns3_bucket = \"{}\"\n",
            var("MAILJOURNAL_TEST_S3_ENDPOINT"),
            var("MAILJOURNAL_TEST_S3_REGION"),
            var("MAILJOURNAL_TEST_S3_BUCKET"),
        ),
    )
}

fn fixture() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/corpus/eej/synthetic")
            .join(FIXTURE),
    )
    .unwrap()
}

/// The fixture's report with its original's Message-ID set to `message_id`.
fn first_report(message_id: &str) -> String {
    fixture().replace(FIXTURE_MESSAGE_ID, message_id)
}

/// Another report of the same message, with other envelope recipients (the hybrid side's,
/// say): erin and frank instead of the fixture's.
fn second_report(message_id: &str) -> String {
    let first = first_report(message_id);
    let start = first.find("To: bob@contoso.com, Expanded").unwrap();
    let end = first.find("Recipient: partner@fabrikam.com\r\n").unwrap()
        + "Recipient: partner@fabrikam.com\r\n".len();
    let mut report = first.clone();
    report.replace_range(
        start..end,
        "To: erin@contoso.com\r\nBcc: frank@contoso.com\r\n",
    );
    report
}

/// Waits until every id of `ids` is settled in the shared index.
fn wait_settled(ids: &[String], within: Duration) {
    let list = ids
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(",");
    let deadline = Instant::now() + within;
    loop {
        let settled = psql(&format!(
            "SELECT count(*) FROM items WHERE id IN ({list}) AND state IN ('archived', 'merged')"
        ));
        if settled.as_deref() == Some(ids.len().to_string().as_str()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {settled:?} of {} ({:?})",
            ids.len(),
            psql(&format!(
                "SELECT id, node, state, reason FROM items WHERE id IN ({list})"
            ))
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn two_reports_at_two_nodes_at_once_end_as_one_message_with_every_recipient() {
    let Some(url) = backend() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(unique("journal-shared-race"));
    let (mx1, mx2) = (unique("mx1"), unique("mx2"));
    let flags = ["--match-interval-seconds", "1"];
    let config_a = node(&dir.join("a"), &mx1, &url);
    let (_a, port_a) = common::serve(&config_a, &flags);
    let (_b, port_b) = common::serve(&node(&dir.join("b"), &mx2, &url), &flags);
    let rounds = 25;
    let keys: Vec<String> = (0..rounds)
        .map(|_| format!("{}@contoso.com", unique("race")))
        .collect();
    let mut sent = Vec::new();
    for key in &keys {
        // Both reports at the same moment, one to each node.
        let (first, second) = (first_report(key), second_report(key));
        let a = std::thread::spawn(move || common::send(port_a, first.as_bytes()));
        let b = std::thread::spawn(move || common::send(port_b, second.as_bytes()));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_ne!(a, b, "queue ids are unique across the nodes");
        sent.push((a, b));
    }
    let ids: Vec<String> = sent
        .iter()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    wait_settled(&ids, Duration::from_secs(60));
    for (key, (a, b)) in keys.iter().zip(&sent) {
        let archived = psql(&format!(
            "SELECT string_agg(id, ',') FROM archived WHERE message_id = '{key}'"
        ))
        .unwrap();
        assert!(
            archived == *a || archived == *b,
            "{key}: one archived message, one of the two reports: {archived}"
        );
        let recipients = psql(&format!(
            "SELECT string_agg(DISTINCT lower(address), ',' ORDER BY lower(address)) FROM archived_recipients WHERE archived_id = '{archived}'"
        ))
        .unwrap();
        for who in ["legal@contoso.com", "erin@contoso.com", "frank@contoso.com"] {
            assert!(recipients.contains(who), "{key}: {who} not in {recipients}");
        }
        let states = psql(&format!(
            "SELECT string_agg(node || ':' || state, ',' ORDER BY state) FROM items WHERE id IN ('{a}', '{b}')"
        ))
        .unwrap();
        assert!(
            states == format!("{mx1}:archived,{mx2}:merged")
                || states == format!("{mx2}:archived,{mx1}:merged"),
            "{key}: {states}"
        );
    }
    // The connector is cluster-wide: one row, its last message the newest either node took.
    let connectors = psql("SELECT count(*) FROM connectors WHERE description = 'Microsoft 365'");
    assert_eq!(connectors.as_deref(), Some("1"));

    // The read commands, from one node's configuration, see the whole archive.
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_journal-server"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let config = config_a.to_str().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&run(&[
        "status", "--config", config, "--json", "--limit", "0",
    ]))
    .unwrap();
    let items = status["queue"]["items"].as_array().unwrap();
    let (a, b) = &sent[0];
    let node_of = |id: &str| {
        items
            .iter()
            .find(|i| i["id"] == id)
            .map(|i| i["node"].clone())
    };
    assert_eq!(node_of(a), Some(serde_json::json!(mx1)), "{status}");
    assert_eq!(node_of(b), Some(serde_json::json!(mx2)), "{status}");
    assert_eq!(status["connectors"][0]["status"], "up", "{status}");
    let shown: serde_json::Value =
        serde_json::from_slice(&run(&["show", "--config", config, b, "--json"])).unwrap();
    let addresses: Vec<&str> = shown["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert!(
        addresses.contains(&"legal@contoso.com") && addresses.contains(&"frank@contoso.com"),
        "{shown}"
    );
    // The archived form comes from the bucket.
    let archived = run(&["get", "--config", config, a]);
    assert!(String::from_utf8_lossy(&archived).contains(keys[0].as_str()));
    let found = run(&[
        "find",
        "--config",
        config,
        "--recipient",
        "FRANK@contoso.com",
        "--json",
        "--limit",
        "0",
    ]);
    assert!(String::from_utf8_lossy(&found).lines().count() >= rounds);
    // A settled item is not started over, from any node.
    let retry = Command::new(env!("CARGO_BIN_EXE_journal-server"))
        .args(["retry", "--config", config, b])
        .output()
        .unwrap();
    assert_eq!(
        retry.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the shared-backend script's `verb` (pg-stop, pg-start).
fn script(verb: &str) {
    let script = std::env::var("MAILJOURNAL_SHARED_SCRIPT").unwrap();
    let status = Command::new("bash")
        .args([script.as_str(), verb])
        .status()
        .unwrap();
    assert!(status.success(), "{verb}");
}

/// `get --config` gives the archived form of every item of `ids`.
fn assert_archived_forms(config: &Path, ids: &[String]) {
    for id in ids {
        let out = Command::new(env!("CARGO_BIN_EXE_journal-server"))
            .args(["get", "--config", config.to_str().unwrap(), id])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Sends a report of a new message per key; the queue ids.
fn send_each(port: u16, keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|key| common::send(port, first_report(key).as_bytes()))
        .collect()
}

fn keys(what: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| format!("{}@contoso.com", unique(what)))
        .collect()
}

#[test]
fn a_node_killed_while_archiving_archives_again_without_a_duplicate() {
    let Some(url) = backend() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(unique("journal-shared-kill"));
    let config = node(&dir, &unique("mx1"), &url);
    let flags = ["--match-interval-seconds", "1"];
    let keys = keys("kill", 40);
    let (server, port) = common::serve(&config, &flags);
    let ids = send_each(port, &keys);
    // Archiving has begun (some settled), not ended.
    let deadline = Instant::now() + Duration::from_secs(30);
    let list = ids
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(",");
    while psql(&format!(
        "SELECT count(*) FROM items WHERE id IN ({list}) AND state = 'archived'"
    ))
    .as_deref()
    .unwrap_or("0")
        == "0"
    {
        assert!(Instant::now() < deadline, "nothing archived");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(server); // SIGKILL
    let (_server, _) = common::serve(&config, &flags);
    wait_settled(&ids, Duration::from_secs(60));
    for key in &keys {
        let n = psql(&format!(
            "SELECT count(*) FROM archived WHERE message_id = '{key}'"
        ));
        assert_eq!(n.as_deref(), Some("1"), "{key}: one archived message");
    }
    let items = psql(&format!(
        "SELECT count(*) FROM items WHERE id IN ({list}) AND state = 'archived'"
    ));
    assert_eq!(items.as_deref(), Some("40"));
    // Every archived form is in the bucket, the ones in flight at the kill included.
    assert_archived_forms(&config, &ids);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_object_store_outage_loses_nothing_and_heals_without_a_restart() {
    let Some(url) = backend() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(unique("journal-shared-s3-outage"));
    let config = node(&dir, &unique("mx1"), &url);
    let (mut server, port) = common::serve(&config, &["--match-interval-seconds", "1"]);
    script("s3-stop");
    let ids = send_each(port, &keys("s3-down", 5));
    std::thread::sleep(Duration::from_secs(4));
    assert!(server.0.try_wait().unwrap().is_none(), "the node stopped");
    script("s3-start");
    wait_settled(&ids, Duration::from_secs(120));
    assert_archived_forms(&config, &ids);
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "healed by a restart"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_database_outage_loses_nothing_and_heals_without_a_restart() {
    let Some(url) = backend() else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(unique("journal-shared-outage"));
    let name = unique("mx1");
    let (mut server, port) =
        common::serve(&node(&dir, &name, &url), &["--match-interval-seconds", "1"]);
    let before = common::send(
        port,
        first_report(&format!("{}@contoso.com", unique("before"))).as_bytes(),
    );
    wait_settled(std::slice::from_ref(&before), Duration::from_secs(30));

    script("pg-stop");
    // Still accepting: every 250 is in the node's spool.
    let during: Vec<String> = (0..5)
        .map(|_| {
            let key = format!("{}@contoso.com", unique("during"));
            common::send(port, first_report(&key).as_bytes())
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let health = std::fs::read_to_string(dir.join("data/archive-health")).unwrap();
    assert!(health.contains("failing"), "{health}");
    assert!(server.0.try_wait().unwrap().is_none(), "the node stopped");
    script("pg-start");

    wait_settled(&during, Duration::from_secs(120));
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "healed by a restart"
    );
    let health = std::fs::read_to_string(dir.join("data/archive-health")).unwrap();
    assert!(!health.contains("failing"), "{health}");
    let _ = std::fs::remove_dir_all(&dir);
}
