//! `journal-server inspect` as a real process against the shared corpus: the JSON contract of
//! DESIGN.md, key for key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpus/eej");

fn inspect(args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_journal-server"))
        .arg("inspect")
        .args(args)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.code(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn contract_keys_and_values() {
    let file = format!("{CORPUS}/synthetic/onprem_to_cc_bcc_expanded_forwarded_onbehalf.eml");
    let (code, objects, _) = inspect(&[&file]);
    assert_eq!(code, Some(0));
    let o = &objects[0];
    let mut keys: Vec<_> = o.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "file",
            "format",
            "message_id",
            "on_behalf_of",
            "original",
            "recipients",
            "report_version",
            "sender",
            "step_down",
            "subject",
            "unwrapped_ndr",
            "warnings"
        ]
    );
    assert_eq!(o["file"], file.as_str());
    assert_eq!(o["format"], "envelope");
    assert_eq!(o["step_down"], Value::Null);
    assert_eq!(o["report_version"], "exchange2007");
    assert_eq!(o["sender"], "alice@contoso.com");
    assert_eq!(o["on_behalf_of"], "sales@contoso.com");
    assert_eq!(
        o["message_id"],
        "DM6PR01MB1234ABCD@DM6PR01MB1234.namprd01.prod.outlook.com"
    );
    assert_eq!(o["recipients"].as_array().unwrap().len(), 7);
    assert_eq!(
        o["recipients"][5],
        serde_json::json!({"address": "ext-auditor@fabrikam.com", "field": "bcc", "expanded": "auditors@contoso.com", "forwarded": null})
    );
    let original = &o["original"];
    assert_eq!(original["clear_text"], false);
    let bytes = std::fs::read(&file).unwrap();
    let (offset, length) = (
        original["offset"].as_u64().unwrap() as usize,
        original["length"].as_u64().unwrap() as usize,
    );
    assert!(bytes[offset..offset + length].starts_with(b"From: Sales Team <sales@contoso.com>"));
}

#[test]
fn many_files_one_line_each_and_step_down_eml() {
    let a = format!("{CORPUS}/synthetic/not_enveloped_plain_message.eml");
    let b = format!("{CORPUS}/synthetic/rms_protected_plus_decrypted_copy.eml");
    let (code, objects, _) = inspect(&["--prefer-clear-text-version", &a, &b]);
    assert_eq!(code, Some(0));
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0]["format"], "eml");
    assert_eq!(objects[0]["step_down"], "no_journal_header");
    assert_eq!(objects[0]["original"]["offset"], 0);
    assert_eq!(objects[0]["recipients"][0]["field"], "to");
    assert_eq!(objects[1]["original"]["clear_text"], true);
}

#[test]
fn unreadable_file_exits_2_after_the_others() {
    let a = format!("{CORPUS}/synthetic/not_enveloped_plain_message.eml");
    let (code, objects, stderr) = inspect(&["/nonexistent/item.eml", &a]);
    assert_eq!(code, Some(2));
    assert_eq!(objects.len(), 1);
    assert!(stderr.contains("/nonexistent/item.eml"));
}
