//! The journaling page: server-rendered HTML, no JavaScript, refreshing itself. What the
//! specification's console shows under *Archive | Journaling*: each definition's service
//! status, and the queue details (for an envelope item the recipient is the sender and the
//! journal address the recipient, as the index records them).

use std::fmt::Write as _;

use mailjournal::archive::ArchivedMessage;
use mailjournal::archive::ItemRow;
use mailjournal::engine::StoreHealth;
use mailjournal::queue::{ConnectorStatus, Timestamp};
use mailjournal::status::StatusReport;

/// Seconds between the page's own refreshes.
pub const REFRESH_SECONDS: u32 = 10;

/// Text made safe for HTML content and attribute values.
///
/// ```
/// assert_eq!(mailjournal_admin::page::Escaped("<a href=\"x\">&'").to_string(),
///            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
/// ```
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['<', '>', '&', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'&' => "&amp;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

fn e(text: &str) -> Escaped<'_> {
    Escaped(text)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f2f2f2}.up{color:#075e07;font-weight:bold}.down{color:#b00020;font-weight:bold}\
.never_seen,.disabled{color:#666}.failing{color:#b00020}code{font-size:.95em}small{color:#666}";

fn head(out: &mut String, title: &str, refresh: bool) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>",
        e(title)
    );
    if refresh {
        let _ = write!(
            out,
            "<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">"
        );
    }
    let _ = write!(out, "<style>{STYLE}</style></head><body>");
}

fn time(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "never".to_owned(), Timestamp::rfc3339)
}

/// The journaling page. `details`: whether the reader may see envelope addresses and
/// reasons (no token is configured, or it gave it); without, a form asks for the token.
pub fn index(report: &StatusReport, details: bool) -> String {
    let mut out = String::with_capacity(8 * 1024);
    head(&mut out, "Archive | Journaling", true);
    let _ = write!(
        out,
        "<h1>Archive | Journaling</h1><p><small>As of {} (refreshes every {REFRESH_SECONDS} s)</small></p>",
        report.at.rfc3339()
    );
    out.push_str(
        "<h2>Journal definitions</h2><table id=\"definitions\"><tr><th>Description</th>\
         <th>Service email address</th><th>Service status</th><th>Last message</th>\
         <th>Period of inactivity allowed</th></tr>",
    );
    for c in &report.connectors {
        let since = match c.status {
            ConnectorStatus::Down { since, .. } => format!(" since {}", since.rfc3339()),
            _ => String::new(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"{status}\">{status}{since}</td><td>{}</td><td>{} min</td></tr>",
            e(&c.description),
            e(&c.service_email_address),
            time(c.last_message_at()),
            c.period_minutes,
            status = c.status.name(),
        );
    }
    out.push_str("</table>");

    out.push_str("<h2>Queue</h2><table id=\"counts\"><tr>");
    for state in report.counts.keys() {
        let _ = write!(out, "<th>{}</th>", state.as_str());
    }
    out.push_str("</tr><tr>");
    for n in report.counts.values() {
        let _ = write!(out, "<td>{n}</td>");
    }
    out.push_str("</tr></table>");
    if report.counts.is_empty() {
        out.push_str("<p>No journal items yet.</p>");
    }
    if let Some(age) = report.oldest_pending_age {
        let _ = write!(
            out,
            "<p>Oldest item not settled: {} s old.</p>",
            age.as_millis() / 1000
        );
    }
    match &report.archive_store {
        Some(StoreHealth::Failing { since, error }) => {
            let _ = write!(
                out,
                "<p class=\"failing\" id=\"archive-store\">Archive store FAILING since {}: {} (tried again automatically; mail is spooled meanwhile)</p>",
                since.rfc3339(),
                e(error)
            );
        }
        Some(StoreHealth::Ok) => {
            out.push_str("<p id=\"archive-store\">Archive store: ok.</p>");
        }
        None => {}
    }
    let _ = write!(
        out,
        "<p>Spool: {} live segment(s), {:.1} MB; {} kept, {:.1} MB.</p>",
        report.spool.live_segments,
        report.spool.live_bytes as f64 / 1e6,
        report.spool.kept_segments,
        report.spool.kept_bytes as f64 / 1e6
    );

    out.push_str("<h2>Queue details</h2>");
    if !details {
        out.push_str(
            "<form method=\"post\" action=\"/login\"><p>Senders, recipients and message \
             details need the admin token: <input type=\"password\" name=\"token\" \
             autocomplete=\"current-password\"> <button type=\"submit\">Show</button></p></form>",
        );
    }
    out.push_str("<table id=\"items\"><tr><th>Queue id</th><th>State</th><th>Received</th>");
    if details {
        out.push_str("<th>Sender</th><th>Recipient</th><th>Definition</th>");
    }
    // Several receivers on one archive: which one took each item.
    let shared = report.items.iter().any(|i| i.node.is_some());
    if shared {
        out.push_str("<th>Node</th>");
    }
    out.push_str("<th>Attempts</th>");
    if details {
        out.push_str("<th>Reason</th>");
    }
    out.push_str("</tr>");
    for item in &report.items {
        let id = item.id.to_string();
        let _ = write!(
            out,
            "<tr><td><a href=\"/item/{id}\"><code>{id}</code></a></td><td>{}</td><td>{}</td>",
            item.state.as_str(),
            item.received_at.rfc3339()
        );
        if details {
            let _ = write!(
                out,
                "<td>{}</td><td>{}</td><td>{}</td>",
                e(&item.sender),
                e(&item.recipient),
                e(item.definition.as_deref().unwrap_or(""))
            );
        }
        if shared {
            let _ = write!(out, "<td>{}</td>", e(item.node.as_deref().unwrap_or("")));
        }
        let _ = write!(out, "<td>{}</td>", item.attempts);
        if details {
            let _ = write!(out, "<td>{}</td>", e(item.reason.as_deref().unwrap_or("")));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out.push_str(
        "<p><small><a href=\"/metrics\">/metrics</a> · <a href=\"/healthz\">/healthz</a> · \
         <a href=\"/readyz\">/readyz</a></small></p></body></html>\n",
    );
    out
}

/// The page of one item: what the queue knows of it and, once archived, the message as the
/// archive knows it (every recipient line of every report merged into it). `details` as
/// for [`index`].
pub fn item(row: &ItemRow, message: Option<&ArchivedMessage>, details: bool) -> String {
    let mut out = String::with_capacity(4 * 1024);
    let id = row.id.to_string();
    head(&mut out, &format!("Journal item {id}"), false);
    let _ = write!(
        out,
        "<p><a href=\"/\">Archive | Journaling</a></p><h1>Journal item <code>{id}</code></h1>\
         <table id=\"item\"><tr><th>State</th><td>{}</td></tr><tr><th>Definition</th><td>{}</td></tr>\
         <tr><th>Received</th><td>{}</td></tr><tr><th>Attempts</th><td>{}</td></tr>",
        row.state.as_str(),
        e(&row.definition),
        row.received_at.rfc3339(),
        row.attempts
    );
    if let Some(node) = &row.node {
        let _ = write!(out, "<tr><th>Node</th><td>{}</td></tr>", e(node));
    }
    if details {
        let _ = write!(
            out,
            "<tr><th>Sender</th><td>{}</td></tr><tr><th>Recipient</th><td>{}</td></tr>\
             <tr><th>Reason</th><td>{}</td></tr>",
            e(&row.sender),
            e(&row.recipient),
            e(row.reason.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>");
    if !details {
        out.push_str(
            "<p>Addresses and the archived message need the admin token (see the \
             <a href=\"/\">journaling page</a>).</p></body></html>\n",
        );
        return out;
    }
    let Some(m) = message else {
        out.push_str("<p>Not archived (yet).</p></body></html>\n");
        return out;
    };
    let opt = |v: &Option<String>| v.as_deref().map(e).map(|x| x.to_string());
    let _ = write!(
        out,
        "<h2>Archived message <code>{}</code></h2><table id=\"message\">\
         <tr><th>Subject</th><td>{}</td></tr><tr><th>Sender</th><td>{}</td></tr>\
         <tr><th>On behalf of</th><td>{}</td></tr><tr><th>Message-ID</th><td>{}</td></tr>\
         <tr><th>Sent</th><td>{}</td></tr><tr><th>Archived</th><td>{}</td></tr>\
         <tr><th>Format</th><td>{}</td></tr><tr><th>Content</th><td><code>{}</code></td></tr></table>",
        m.id,
        opt(&m.subject).unwrap_or_default(),
        opt(&m.sender).unwrap_or_default(),
        opt(&m.on_behalf_of).unwrap_or_default(),
        opt(&m.message_id).unwrap_or_default(),
        opt(&m.sent_date).unwrap_or_default(),
        m.archived_at.rfc3339(),
        e(&m.format),
        m.content
    );
    out.push_str(
        "<h3>Recipients</h3><table id=\"recipients\"><tr><th>Address</th><th>Field</th>\
         <th>Expanded from</th><th>Forwarded from</th><th>Report</th></tr>",
    );
    for r in &m.recipients {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/item/{report}\">{report}</a></td></tr>",
            e(&r.recipient.address),
            e(&r.recipient.field),
            opt(&r.recipient.expanded).unwrap_or_default(),
            opt(&r.recipient.forwarded).unwrap_or_default(),
            report = r.report
        );
    }
    out.push_str("</table><h3>Reports</h3><table id=\"reports\"><tr><th>Queue id</th><th>State</th><th>Definition</th><th>Received</th></tr>");
    for r in &m.reports {
        let _ = write!(
            out,
            "<tr><td><a href=\"/item/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            r.state.as_str(),
            e(&r.definition),
            r.received_at.rfc3339(),
            id = r.id
        );
    }
    out.push_str("</table>");
    if !m.mailboxes.is_empty() {
        out.push_str("<h3>Archived for</h3><ul>");
        for mailbox in &m.mailboxes {
            let _ = write!(out, "<li>{}</li>", e(mailbox));
        }
        out.push_str("</ul>");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailjournal::queue::{ItemId, StateName};
    use mailjournal::status::{ConnectorReport, ItemReport};

    fn report() -> StatusReport {
        StatusReport {
            at: Timestamp(1_764_626_400_000),
            connectors: vec![ConnectorReport {
                description: "Microsoft 365 <prod>".into(),
                service_email_address: "journaling@journal.contoso.com".into(),
                status: ConnectorStatus::Down {
                    since: Timestamp(1_764_626_000_000),
                    last_message_at: Timestamp(1_764_615_200_000),
                },
                period_minutes: 180,
            }],
            counts: [(StateName::Archived, 3), (StateName::Waiting, 1)].into(),
            oldest_pending_age: None,
            items: vec![ItemReport {
                id: ItemId(0x0123_4567_89AB_CDEF),
                state: StateName::Waiting,
                definition: Some("Microsoft 365 <prod>".into()),
                sender: "alice@contoso.com".into(),
                recipient: "journaling@journal.contoso.com".into(),
                received_at: Timestamp(1_764_626_300_000),
                attempts: 2,
                reason: Some("waiting for <the> second report".into()),
                node: None,
            }],
            spool: Default::default(),
            archive_store: Some(StoreHealth::Ok),
            retention: Default::default(),
        }
    }

    #[test]
    fn the_page_shows_statuses_and_escapes_what_it_was_given() {
        let page = index(&report(), true);
        assert!(page.contains("<td>Microsoft 365 &lt;prod&gt;</td>"));
        assert!(page.contains("class=\"down\">down since 2025-12-01T21:53:20Z"));
        // In the lifecycle's order.
        assert!(page.contains("<th>waiting</th><th>archived</th></tr><tr><td>1</td><td>3</td>"));
        assert!(page.contains("<a href=\"/item/0123456789ABCDEF\">"));
        assert!(page.contains("<td>alice@contoso.com</td><td>journaling@journal.contoso.com</td>"));
        assert!(page.contains("waiting for &lt;the&gt; second report"));
        assert!(page.contains("http-equiv=\"refresh\""));
        assert!(!page.contains("<script"));
    }

    #[test]
    fn without_the_token_no_address_is_shown() {
        let page = index(&report(), false);
        assert!(!page.contains("alice@contoso.com"));
        assert!(!page.contains("second report"));
        assert!(page.contains("action=\"/login\""));
        // The definitions are configuration, not mail: they stay.
        assert!(page.contains("journaling@journal.contoso.com</td><td class=\"down\""));
    }
}
