//! `show`, `find` and `export` on a real server's archive: journal reports sent over SMTP,
//! the archive read back through the commands, the export read by Python's `mailbox`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const FIXTURE: &str = "onprem_to_cc_bcc_expanded_forwarded_onbehalf.eml";

mod common;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_journal-server")
}

fn start(dir: &Path) -> (common::ServerProcess, u16) {
    let config = common::contoso_config(
        dir,
        "",
        "description = \"Microsoft 365\"\ndelivery_wait_attempts = 1",
        "",
    );
    common::serve(&config, &["--match-interval-seconds", "1"])
}

fn send(port: u16, report: &[u8]) -> String {
    common::send(port, report)
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn show(data: &Path, id: &str) -> Option<serde_json::Value> {
    let (code, out) = run(&["show", "--data-dir", data.to_str().unwrap(), id, "--json"]);
    (code == Some(0)).then(|| serde_json::from_str(out.lines().next().unwrap()).unwrap())
}

fn find(data: &Path, filters: &[&str]) -> Vec<String> {
    let mut args = vec!["find", "--data-dir", data.to_str().unwrap(), "--json"];
    args.extend_from_slice(filters);
    let (code, out) = run(&args);
    assert_eq!(code, Some(0), "{out}");
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The same message journaled again, as a second report with other envelope recipients
/// (another part of a distribution list, say): the same original, so the same key.
fn second_report(first: &str) -> String {
    let start = first.find("To: bob@contoso.com, Expanded").unwrap();
    let end = first.find("Recipient: partner@fabrikam.com\r\n").unwrap()
        + "Recipient: partner@fabrikam.com\r\n".len();
    let mut report = first.to_owned();
    report.replace_range(
        start..end,
        "To: erin@contoso.com\r\nBcc: frank@contoso.com\r\n",
    );
    report.replace(
        "<0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0@journal.report.generator>",
        "<second-report@journal.report.generator>",
    )
}

#[test]
fn who_received_what_is_shown_searched_and_exported() {
    let dir = std::env::temp_dir().join(format!("journal-archive-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpus/eej/synthetic")
        .join(FIXTURE);
    let first = std::fs::read_to_string(fixture).unwrap();
    let (_server, port) = start(&dir);
    let a = send(port, first.as_bytes());
    // After the first is archived: the second then merges into it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while show(&data, &a).is_none() {
        assert!(Instant::now() < deadline, "{a} never archived");
        std::thread::sleep(Duration::from_millis(200));
    }
    let b = send(port, second_report(&first).as_bytes());
    let merged = loop {
        let shown = show(&data, &b);
        if let Some(v) = shown.filter(|v| v["state"] == "merged") {
            break v;
        }
        assert!(Instant::now() < deadline, "{b} never merged");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        merged["id"],
        a.as_str(),
        "a merged report shows the message it joined"
    );
    assert_eq!(merged["merged_into"], a.as_str());
    assert_eq!(merged["requested"], b.as_str());

    let m = show(&data, &a).unwrap();
    assert_eq!(m["sender"], "alice@contoso.com");
    assert_eq!(m["on_behalf_of"], "sales@contoso.com");
    assert_eq!(m["subject"], "Q3 numbers");
    assert_eq!(
        m["message_id"],
        "DM6PR01MB1234ABCD@DM6PR01MB1234.namprd01.prod.outlook.com"
    );
    assert_eq!(m["definition"], "Microsoft 365");
    assert_eq!(
        (m["state"].as_str(), m["merged_into"].is_null()),
        (Some("archived"), true)
    );
    let line = |address: &str| -> (String, String, String, String) {
        let r = m["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == address)
            .unwrap_or_else(|| panic!("{address} not shown: {m}"));
        let text = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
        (
            text("field"),
            text("expanded"),
            text("forwarded"),
            text("report"),
        )
    };
    let dash = || "-".to_owned();
    assert_eq!(
        line("legal@contoso.com"),
        ("bcc".into(), dash(), dash(), a.clone())
    );
    assert_eq!(
        line("ext-auditor@fabrikam.com"),
        (
            "bcc".into(),
            "auditors@contoso.com".into(),
            dash(),
            a.clone()
        )
    );
    assert_eq!(
        line("dave-assistant@contoso.com"),
        ("to".into(), dash(), "dave@contoso.com".into(), a.clone())
    );
    assert_eq!(line("partner@fabrikam.com").0, "recipient");
    assert_eq!(
        line("frank@contoso.com"),
        ("bcc".into(), dash(), dash(), b.clone())
    );
    assert_eq!(
        m["recipients"].as_array().unwrap().len(),
        9,
        "7 + 2 from the second report"
    );
    let reports: Vec<(&str, &str)> = m["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(reports, [(a.as_str(), "archived"), (b.as_str(), "merged")]);
    assert!(m["size"].as_u64().unwrap() > 100);

    // Find: Bcc and expanded-group members, any case; every criterion narrows.
    let only_a = vec![a.clone()];
    assert_eq!(find(&data, &["--recipient", "legal@contoso.com"]), only_a);
    assert_eq!(find(&data, &["--recipient", "FRANK@Contoso.com"]), only_a);
    assert_eq!(
        find(&data, &["--recipient", "auditors@contoso.com"]),
        only_a,
        "the group"
    );
    assert_eq!(
        find(&data, &["--recipient", "nobody@contoso.com"]),
        Vec::<String>::new()
    );
    assert_eq!(find(&data, &["--sender", "alice@contoso.com"]), only_a);
    assert_eq!(
        find(
            &data,
            &[
                "--message-id",
                "<DM6PR01MB1234ABCD@DM6PR01MB1234.namprd01.prod.outlook.com>"
            ]
        ),
        only_a
    );
    assert_eq!(
        find(
            &data,
            &["--sender", "alice@contoso.com", "--until", "1970-01-02"]
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        find(
            &data,
            &["--since", "2000-01-01", "--recipient", "kim@contoso.com"]
        ),
        only_a
    );
    let (code, out) = run(&[
        "find",
        "--data-dir",
        data.to_str().unwrap(),
        "--since",
        "yesterday",
    ]);
    assert_eq!(code, Some(2), "{out}");

    // Export: mbox that Python's mailbox reads; the envelope only when asked for.
    let mbox = dir.join("out.mbox");
    let (code, out) = run(&[
        "export",
        "--data-dir",
        data.to_str().unwrap(),
        "--recipient",
        "legal@contoso.com",
        "--format",
        "mbox",
        "--output",
        mbox.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let exported = std::fs::read(&mbox).unwrap();
    assert!(
        !String::from_utf8_lossy(&exported).contains("frank@contoso.com"),
        "the envelope's Bcc list leaked into a default export"
    );
    let read = Command::new("python3")
        .args(["-c", "import mailbox, sys\nfor m in mailbox.mbox(sys.argv[1]): print(m['Message-ID'], m['Subject'])"])
        .arg(&mbox)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        "<DM6PR01MB1234ABCD@DM6PR01MB1234.namprd01.prod.outlook.com> Q3 numbers",
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let eml = dir.join("eml");
    let (code, out) = run(&[
        "export",
        "--data-dir",
        data.to_str().unwrap(),
        "--format",
        "eml",
        "--with-envelope",
        "--output",
        eml.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let mut file = String::new();
    std::fs::File::open(eml.join(format!("{a}.eml")))
        .unwrap()
        .read_to_string(&mut file)
        .unwrap();
    let read = Command::new("python3")
        .args(["-c", "import email, sys\nm = email.message_from_binary_file(open(sys.argv[1], 'rb'))\nprint(len(m.get_all('X-Mailjournal-Envelope-Recipient')), m['Subject'])\nprint(m['X-Mailjournal-Envelope-On-Behalf-Of'])"])
        .arg(eml.join(format!("{a}.eml")))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        "9 Q3 numbers\nsales@contoso.com"
    );
    assert!(file.contains("X-Mailjournal-Envelope-Recipient: frank@contoso.com; field=bcc\r\n"));
    assert!(file.contains(
        "X-Mailjournal-Envelope-Recipient: ext-auditor@fabrikam.com; field=bcc; expanded=auditors@contoso.com\r\n"
    ));
    assert_eq!(std::fs::read_dir(&eml).unwrap().count(), 1);
}
