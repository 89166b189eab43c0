//! The configuration commands run as a real process: exit codes and output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_journal-server"))
        .args(args)
        .output()
        .expect("run journal-server")
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("journal-server-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn init_output_passes_check_config_and_plans() {
    let init = run(&["init", "--domain", "contoso.com"]);
    assert!(init.status.success());
    let text = String::from_utf8(init.stdout).unwrap();
    assert!(
        text.contains("service_email_address = \"journaling@journal.contoso.com\""),
        "{text}"
    );
    let path = temp_file("init.toml", &text);

    let check = run(&["check-config", path.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0));
    let out = String::from_utf8(check.stdout).unwrap();
    assert!(
        out.contains("warning: journal[0].additional_source_ip_ranges"),
        "{out}"
    );
    assert!(out.contains("0 error(s), 1 warning(s)"), "{out}");

    let plan = run(&[
        "m365-plan",
        "--config",
        path.to_str().unwrap(),
        "--region",
        "us",
        "--ndr-to",
        "ndr@contoso.com",
    ]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let plan = String::from_utf8(plan.stdout).unwrap();
    assert!(
        plan.contains(
            "-SmartHosts 'us-smtp-journal-1.mimecast.com','us-smtp-journal-2.mimecast.com'"
        ),
        "{plan}"
    );

    let refused = run(&[
        "m365-plan",
        "--config",
        path.to_str().unwrap(),
        "--smart-host",
        "relay.example.net",
        "--ndr-to",
        "journaling@journal.contoso.com",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("must not be the journal address"));
}

#[test]
fn check_config_exit_codes() {
    let invalid = temp_file(
        "invalid.toml",
        "[[internal_domain]]\nname = \"contoso.com\"\n[[journal]]\ndescription = \"x\"\nservice_email_address = \"journaling@journal.contoso.com\"\nadditional_source_ip_ranges = [\"10.1.2.3\"]\n",
    );
    let out = run(&["check-config", invalid.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("error: journal[0].additional_source_ip_ranges[0] = \"10.1.2.3\": an address without a CIDR mask (hint: write a single address as 10.1.2.3/32)"), "{text}");
    assert!(
        text.contains("error: journal[0].service_email_address"),
        "{text}"
    );

    let broken = temp_file("broken.toml", "[server]\nlisten = [\n");
    let out = run(&["check-config", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.toml:"));

    let out = run(&["check-config", "/nonexistent/journal.toml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_config_reads_the_tls_files_as_serve_would() {
    let init = run(&["init", "--domain", "contoso.com"]);
    let text = String::from_utf8(init.stdout).unwrap();
    let pair = |name: &str| {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let cert = temp_file(&format!("{name}.pem"), &certified.cert.pem());
        let key = temp_file(
            &format!("{name}.key"),
            &certified.signing_key.serialize_pem(),
        );
        (cert, key)
    };
    let (cert, key) = pair("mx.journal.contoso.com");
    let (_, other_key) = pair("other.contoso.com");
    let with_files = |cert: &PathBuf, key: &PathBuf| {
        text.replacen(
            "[server]\n",
            &format!(
                "[server]\ntls_certificate = {:?}\ntls_private_key = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            ),
            1,
        )
    };

    let good = temp_file("tls-good.toml", &with_files(&cert, &key));
    let out = run(&["check-config", good.to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("0 error(s)"), "{stdout}");

    // A renewal half done: the new certificate, the old key.
    let mismatched = temp_file("tls-mismatched.toml", &with_files(&cert, &other_key));
    let out = run(&["check-config", mismatched.to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("error: server.tls_certificate = "),
        "{stdout}"
    );
    assert!(stdout.contains("1 error(s)"), "{stdout}");

    let missing = temp_file(
        "tls-missing.toml",
        &with_files(&PathBuf::from("/nonexistent/cert.pem"), &key),
    );
    let out = run(&["check-config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("/nonexistent/cert.pem")
    );
}

#[test]
fn check_config_reads_the_admin_token_and_checks_webhooks() {
    let init = run(&["init", "--domain", "contoso.com"]);
    let starter = String::from_utf8(init.stdout).unwrap();
    let short = temp_file("short-token", "guessable\n");
    let good = temp_file("good-token", "  0123456789abcdef0123  \n");
    let with = |name: &str, token: &PathBuf, webhook: &str| {
        temp_file(
            name,
            &format!(
                "{starter}\n[admin]\ntoken_file = \"{}\"\n[[alert]]\nwebhook_url = \"{webhook}\"\n",
                token.display()
            ),
        )
    };
    let out = run(&[
        "check-config",
        with("admin-bad.toml", &short, "ftp://alerts.example.net/")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("error: admin.token_file: admin token"),
        "{text}"
    );
    assert!(
        text.contains("error: alert[0].webhook_url = \"ftp://alerts.example.net/\": the scheme must be http:// or https://"),
        "{text}"
    );
    let out = run(&[
        "check-config",
        with("admin-good.toml", &good, "https://alerts.example.net/hook")
            .to_str()
            .unwrap(),
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("admin."), "{text}");
    assert!(!text.contains("alert["), "{text}");
}
