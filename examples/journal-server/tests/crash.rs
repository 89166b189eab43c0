//! The durability promise under `kill -9`: concurrent clients send while the server is killed,
//! 20 times over; after each restart every message that got a `250` must be in the spool,
//! byte for byte, and no unacknowledged partial message may remain.
//!
//! One message in ten is over the spool's 1 MiB inline limit, so it takes the data-file path.
//! Odd rounds kill at a random moment; even rounds kill inside a log append, at a moment the
//! spool's test hook chooses (`MAILJOURNAL_TEST_TEAR_BATCH`: a batch written in part, then
//! held), so that recovery has torn tails to cut. The test prints how many large messages were
//! committed, how many torn tails recovery cut and how many kills there were, and fails when
//! the first two are zero: a crash test that never takes those paths proves nothing about
//! them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use sha2::{Digest, Sha256};

mod common;

const KILLS: usize = 20;
const CLIENTS: usize = 4;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A server child process, killed (SIGKILL) when dropped: a failing assertion must not leave
/// it running.
struct Server(Child);

impl Server {
    /// `kill -9`, then reap.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the server (with the spool's tear hook set to batch `tear`, if given); its port and
/// its standard error, line by line.
fn start(config: &Path, tear: Option<u64>) -> (Server, u16, mpsc::Receiver<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_journal-server"));
    match tear {
        Some(batch) => command.env("MAILJOURNAL_TEST_TEAR_BATCH", batch.to_string()),
        None => command.env_remove("MAILJOURNAL_TEST_TEAR_BATCH"),
    };
    let child = command
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            // Items settle within seconds and spool segments fill after a few dozen
            // messages, so that segments are sealed and retired between kills too.
            "--match-interval-seconds",
            "1",
            "--spool-segment-bytes",
            "262144",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let (lines, log) = mpsc::channel();
    let stderr = BufReader::new(server.0.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut port = 0;
    for line in BufReader::new(server.0.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(addr) = line.strip_prefix("listening on ") {
            port = addr.rsplit(':').next().unwrap().parse().unwrap();
            break;
        }
    }
    assert_ne!(port, 0);
    (server, port, log)
}

/// Waits for a line of the server's log holding `text`.
fn wait_for_line(log: &mpsc::Receiver<String>, text: &str) -> Option<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match log.recv_timeout(left) {
            Ok(line) if line.contains(text) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// The bytes recovery cut from a torn tail, from its `spool recovered` log line.
fn torn_tail_bytes(log: &mpsc::Receiver<String>) -> u64 {
    let line = wait_for_line(log, "spool recovered").expect("recovery's log line");
    let value = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("torn_tail_bytes="))
        .unwrap_or_else(|| panic!("no torn_tail_bytes in {line:?}"));
    value.parse().unwrap()
}

/// A tiny xorshift generator: deterministic per client, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn message(rng: &mut Rng, n: u64) -> Vec<u8> {
    let mut m = format!("From: crash@contoso.com\r\nTo: bob@contoso.com\r\nMessage-ID: <crash-{n}-{}@contoso.com>\r\nSubject: crash {n}\r\n\r\n", rng.next()).into_bytes();
    // One message in ten is larger than the spool's inline limit (1 MiB): it takes the
    // data-file path; the others travel inside their commit record. Lines average 40.5
    // bytes, so 30 000 of them make 1.2 MB (1.15 MiB) give or take a few hundred bytes.
    let lines = if rng.next().is_multiple_of(10) {
        30_000 + rng.next() % 4000
    } else {
        rng.next() % 3000
    };
    for _ in 0..lines {
        let len = 1 + rng.next() % 76;
        for _ in 0..len {
            m.push(b'!' + (rng.next() % 90) as u8);
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// Sends messages until the connection breaks; records (queue id, sha256) for every 250.
fn client(port: u16, seed: u64, acked: Arc<Mutex<HashMap<String, String>>>, stop: Arc<AtomicBool>) {
    let mut rng = Rng(seed | 1);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut reply = || -> Option<String> {
            let mut text = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).ok()? == 0 {
                    return None;
                }
                text.push_str(&line);
                if line.len() > 3 && line.as_bytes()[3] == b' ' {
                    return Some(text);
                }
            }
        };
        if reply().is_none()
            || writer.write_all(b"EHLO crash.example\r\n").is_err()
            || reply().is_none()
        {
            return;
        }
        for _ in 0..20 {
            n += 1;
            let m = message(&mut rng, n);
            let mut wire =
                b"MAIL FROM:<>\r\nRCPT TO:<journaling@journal.contoso.com>\r\nDATA\r\n".to_vec();
            wire.extend_from_slice(&mailjournal::smtp::data::dot_stuff(&m));
            if writer.write_all(&wire).is_err() {
                return;
            }
            let replies: Option<Vec<String>> = (0..4).map(|_| reply()).collect();
            let Some(replies) = replies else { return };
            if let Some(id) = replies[3].strip_prefix("250 2.0.0 Ok: queued as ") {
                acked
                    .lock()
                    .unwrap()
                    .insert(id.trim().to_owned(), hex(&Sha256::digest(&m)));
            }
        }
        let _ = writer.write_all(b"QUIT\r\n");
    }
}

/// What a log segment says of one message: the SHA-256 its record states, the SHA-256 of the
/// bytes found, and whether they are inside the record (else in a data file).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    recorded: String,
    actual: String,
    inline: bool,
}

/// Reads the frames of one log segment into `stored`; returns where the last whole frame ends.
fn read_segment(log: &[u8], spool: &Path, stored: &mut HashMap<String, Stored>) -> usize {
    let mut pos = 0;
    while pos + 12 <= log.len() {
        let json_len = u32::from_le_bytes(log[pos..pos + 4].try_into().unwrap()) as usize;
        let data_len = u32::from_le_bytes(log[pos + 4..pos + 8].try_into().unwrap()) as usize;
        // A frame that does not fit is a torn tail: the caller reports where the whole ones end.
        let Some(frame) = log.get(pos + 12..pos + 12 + json_len + data_len) else {
            break;
        };
        let (json, data) = frame.split_at(json_len);
        let Ok(record) = serde_json::from_slice::<serde_json::Value>(json) else {
            break;
        };
        let id = record["id"].as_str().unwrap().to_owned();
        let actual = if record["inline_data"] == true {
            hex(&Sha256::digest(data))
        } else {
            let file = [
                spool.join("data").join(&id),
                spool.join("kept/data").join(&id),
            ]
            .into_iter()
            .find_map(|path| std::fs::read(path).ok())
            .unwrap_or_default();
            hex(&Sha256::digest(file))
        };
        stored.insert(
            id,
            Stored {
                recorded: record["sha256"].as_str().unwrap().to_owned(),
                actual,
                inline: record["inline_data"] == true,
            },
        );
        pos += 12 + json_len + data_len;
    }
    pos
}

/// Every item in the archive store and its state, read as `status` does (read-only, while the
/// server runs).
fn item_states(data_dir: &Path) -> HashMap<String, String> {
    store_pairs(data_dir, "SELECT id, state FROM items")
        .into_iter()
        .collect()
}

/// The SHA-256 of what `journal-server get` prints for `id` (as received, or archived).
fn got_sha256(data_dir: &Path, id: &str, as_received: bool) -> String {
    let (code, out) = common::get(data_dir, id, as_received);
    assert_eq!(code, Some(0), "get {id} (as received: {as_received})");
    hex(&Sha256::digest(&out))
}

/// The rows of a two-column query of the archive store, read-only.
fn store_pairs(data_dir: &Path, sql: &str) -> Vec<(String, String)> {
    rusqlite::Connection::open_with_flags(
        data_dir.join("archive.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
    .prepare(sql)
    .unwrap()
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn every_acknowledged_message_survives_kill_9() {
    let dir = std::env::temp_dir().join(format!("journal-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data_dir: PathBuf = dir.join("data");
    let config = dir.join("journal.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhostname = \"mx.journal.contoso.com\"\ndata_dir = \"{}\"\n\
             [[internal_domain]]\nname = \"contoso.com\"\ninbound_checks = \"default_checks\"\n\
             [[internal_domain]]\nname = \"journal.contoso.com\"\n\
             [[journal]]\ndescription = \"crash\"\nservice_email_address = \"journaling@journal.contoso.com\"\n\
             additional_source_ip_ranges = [\"127.0.0.0/8\"]\nencrypted = false\n",
            data_dir.display()
        ),
    )
    .unwrap();
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut rng = Rng(0x5eed_1234_abcd);
    // Every message found committed and intact in the spool after some restart: id -> SHA-256.
    let mut committed: HashMap<String, String> = HashMap::new();
    let mut large_committed = std::collections::HashSet::new();
    let (mut kills, mut torn_tails) = (0, 0);
    for round in 0..KILLS {
        // Even rounds: killed inside the append of a batch the hook picks.
        let tear = round.is_multiple_of(2).then(|| 2 + rng.next() % 30);
        let (mut server, port, log) = start(&config, tear);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (acked, stop) = (acked.clone(), stop.clone());
                let seed = (round * CLIENTS + c) as u64 * 7919 + 1;
                std::thread::spawn(move || client(port, seed, acked, stop))
            })
            .collect();
        match tear {
            Some(_) => assert!(
                wait_for_line(&log, "test hook: spool batch torn").is_some(),
                "round {round}: the hook never tore a batch"
            ),
            None => std::thread::sleep(Duration::from_millis(100 + rng.next() % 500)),
        }
        server.kill();
        kills += 1;
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        // After a restart (recovery runs at start-up), read the spool as the format says:
        // log segments (live in `log/`, retired to `kept/`) of frames
        // `[json len][data len][crc32][json][data]`, large bodies in files beside them.
        let (mut server, _, log) = start(&config, None);
        if torn_tail_bytes(&log) > 0 {
            torn_tails += 1;
        }
        let spool = data_dir.join("spool");
        let mut stored: HashMap<String, Stored> = HashMap::new();
        let mut segments = 0;
        for place in ["log", "kept"] {
            for entry in std::fs::read_dir(spool.join(place)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "log") {
                    continue;
                }
                segments += 1;
                // The running server may retire a live segment meanwhile: it moves to kept/.
                let kept = spool.join("kept").join(path.file_name().unwrap());
                let log = std::fs::read(&path)
                    .or_else(|_| std::fs::read(&kept))
                    .unwrap();
                let end = read_segment(&log, &spool, &mut stored);
                assert_eq!(
                    end,
                    log.len(),
                    "round {round}: {} has a torn tail after recovery",
                    path.display()
                );
            }
        }
        assert!(segments > 0, "round {round}: no log segment");
        for (id, s) in &stored {
            if s.recorded == s.actual {
                committed.insert(id.clone(), s.recorded.clone());
                if !s.inline {
                    large_committed.insert(id.clone());
                }
            }
        }
        for (id, sha) in acked.lock().unwrap().iter() {
            let s = stored
                .get(id)
                .unwrap_or_else(|| panic!("round {round}: acknowledged {id} lost"));
            assert_eq!(
                (&s.recorded, &s.actual),
                (sha, sha),
                "round {round}: acknowledged {id} corrupted"
            );
        }
        // Nothing unacknowledged and partial stays: every data file is committed and intact.
        let data_files = std::fs::read_dir(spool.join("data"))
            .unwrap()
            .chain(std::fs::read_dir(spool.join("kept/data")).unwrap());
        for entry in data_files {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let s = stored.get(&name).unwrap_or_else(|| {
                panic!("round {round}: uncommitted file {name} left in the spool")
            });
            assert_eq!(s.recorded, s.actual, "round {round}: {name}");
        }
        server.kill();
    }
    // Retiring segments must never strand an item: after a last start every acknowledged
    // message reaches a settled state in the archive store.
    let acked_ids: Vec<String> = acked.lock().unwrap().keys().cloned().collect();
    let (mut server, _, _log) = start(&config, None);
    let mut unsettled = acked_ids.clone();
    let mut states = HashMap::new();
    for _ in 0..120 {
        states = item_states(&data_dir);
        unsettled.retain(|id| {
            !matches!(
                states.get(id).map(String::as_str),
                Some("archived" | "merged" | "not_archived")
            )
        });
        if unsettled.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Nothing but whole committed messages ever became an item.
    for id in states.keys() {
        assert!(
            committed.contains_key(id),
            "item {id} is not a committed message"
        );
    }
    server.kill();
    assert!(
        unsettled.is_empty(),
        "{} acknowledged items never settled, e.g. {:?}",
        unsettled.len(),
        unsettled.first()
    );
    // And every acknowledged message can be had back as received, retired segment or not.
    for (id, sha) in acked.lock().unwrap().iter() {
        assert_eq!(&got_sha256(&data_dir, id, true), sha, "{id} as received");
    }
    // And every archived item's archived form is there (content is made durable in batches,
    // and whatever a kill cut short is archived again from the spool).
    let archived = store_pairs(
        &data_dir,
        "SELECT id, content_sha256 FROM items WHERE state IN ('archived', 'merged')",
    );
    assert!(!archived.is_empty(), "nothing was archived");
    for (id, sha) in &archived {
        assert_eq!(&got_sha256(&data_dir, id, false), sha, "{id} archived form");
    }
    let acked = acked_ids.len();
    assert!(
        acked > KILLS * 10,
        "too little traffic to prove anything: {acked} acknowledged"
    );
    let kept = std::fs::read_dir(data_dir.join("spool/kept"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    eprintln!(
        "{acked} acknowledged messages survived {KILLS} kill -9 rounds; {kept} spool segments retired"
    );
    let large = acked_ids
        .iter()
        .filter(|id| large_committed.contains(*id))
        .count();
    println!("large messages committed: {large}");
    println!("torn tails cut: {torn_tails}");
    println!("kills: {kills}");
    assert!(large > 0, "no acknowledged message took the data-file path");
    assert!(torn_tails > 0, "no kill left a torn tail to cut");
}
