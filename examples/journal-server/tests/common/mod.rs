//! What more than one integration test needs.

// Each test binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Runs `journal-server get` for `id` (archived form, or `as_received`): its exit code and
/// what it printed.
pub(crate) fn get(data_dir: &Path, id: &str, as_received: bool) -> (Option<i32>, Vec<u8>) {
    let mut args = vec!["get", "--data-dir", data_dir.to_str().unwrap(), id];
    if as_received {
        args.push("--as-received");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_journal-server"))
        .args(&args)
        .output()
        .unwrap();
    (out.status.code(), out.stdout)
}

/// A server child process, killed when dropped: a failing assertion must not leave it running.
pub(crate) struct ServerProcess(pub(crate) std::process::Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve --config CONFIG --listen 127.0.0.1:0` with these extra flags; the process
/// and the ports it printed, SMTP first, until `ports` of them.
fn start(config: &Path, flags: &[&str], ports: usize) -> (ServerProcess, Vec<u16>) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_journal-server"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .args(flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let server = ServerProcess(child);
    let mut found = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        let addr = line
            .strip_prefix("listening on ")
            .or_else(|| line.strip_prefix("admin listening on http://"));
        if let Some(addr) = addr {
            let port = addr.trim_end_matches('/').rsplit(':').next().unwrap();
            found.push(port.parse().unwrap());
            if found.len() == ports {
                return (server, found);
            }
        }
    }
    panic!("the server did not start");
}

/// Starts `serve --config CONFIG` on an ephemeral port with these extra flags; the process
/// and its port.
pub(crate) fn serve(config: &Path, flags: &[&str]) -> (ServerProcess, u16) {
    let (server, ports) = start(config, flags, 1);
    (server, ports[0])
}

/// Starts `serve --config CONFIG` with the SMTP and admin listeners on ephemeral ports; the
/// process and both ports.
pub(crate) fn serve_with_admin(config: &Path, flags: &[&str]) -> (ServerProcess, u16, u16) {
    let flags = [&["--admin-listen", "127.0.0.1:0"], flags].concat();
    let (server, ports) = start(config, &flags, 2);
    (server, ports[0], ports[1])
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (`Connection: close`): the status code, the
/// response head and the body.
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for header in headers {
        request += header;
        request += "\r\n";
    }
    request += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// The value of the sample `name` (metric and labels as written) in a Prometheus
/// exposition text.
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// Sends `message` to `journaling@journal.contoso.com` in clear text (dot-stuffed here);
/// the queue id of the 250.
pub(crate) fn send(port: u16, message: &[u8]) -> String {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut reply = || {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            text += &line;
            if line.as_bytes().get(3) == Some(&b' ') {
                return text;
            }
        }
    };
    reply();
    stream
        .write_all(b"EHLO client.contoso.com\r\nMAIL FROM:<>\r\nRCPT TO:<journaling@journal.contoso.com>\r\nDATA\r\n")
        .unwrap();
    for _ in 0..4 {
        reply();
    }
    stream
        .write_all(&mailjournal::smtp::data::dot_stuff(message))
        .unwrap();
    let done = reply();
    let id = done
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("{done}"));
    let _ = stream.write_all(b"QUIT\r\n");
    id.trim().to_owned()
}

/// `status --json --limit 0` of `data_dir`, parsed (null when it printed nothing parsable).
pub(crate) fn status_json(data_dir: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_journal-server"))
        .args(["status", "--data-dir", data_dir.to_str().unwrap()])
        .args(["--json", "--limit", "0"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Writes `dir/journal.toml`: a clear-text definition for `journaling@journal.contoso.com`
/// from 127.0.0.0/8 over `dir/data`, with `server` and `journal` lines added to those
/// tables and `rest` appended. Returns its path.
pub(crate) fn contoso_config(
    dir: &Path,
    server: &str,
    journal: &str,
    rest: &str,
) -> std::path::PathBuf {
    let config = dir.join("journal.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhostname = \"mx.journal.contoso.com\"\ndata_dir = \"{}\"\n{server}\n\
             [[internal_domain]]\nname = \"contoso.com\"\ninbound_checks = \"default_checks\"\n\
             [[internal_domain]]\nname = \"journal.contoso.com\"\n\
             [[journal]]\nservice_email_address = \"journaling@journal.contoso.com\"\n\
             additional_source_ip_ranges = [\"127.0.0.0/8\"]\nencrypted = false\n{journal}\n{rest}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    config
}
