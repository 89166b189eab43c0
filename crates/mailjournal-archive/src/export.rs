//! Archived messages as files that ordinary mail tools read: the mboxrd form of an mbox, and
//! the envelope as a header block for exports that ask for it.

use std::io::Write;

use crate::ArchivedMessage;

/// The envelope as a header block put before the archived form (only with
/// `--with-envelope`: a Bcc list is exactly what an export must not leak by default).
pub fn envelope_block(m: &ArchivedMessage) -> Vec<u8> {
    // Header values are single lines: nothing the archive holds may start a field of its own.
    let one_line = |v: &str| v.replace(['\r', '\n', '\0'], " ");
    let mut block = format!("X-Mailjournal-Id: {}\r\n", m.id);
    if let Some(sender) = &m.sender {
        block += &format!("X-Mailjournal-Envelope-Sender: {}\r\n", one_line(sender));
    }
    if let Some(on_behalf_of) = &m.on_behalf_of {
        block += &format!(
            "X-Mailjournal-Envelope-On-Behalf-Of: {}\r\n",
            one_line(on_behalf_of)
        );
    }
    for r in &m.recipients {
        let r = &r.recipient;
        block += &format!(
            "X-Mailjournal-Envelope-Recipient: {}; field={}",
            one_line(&r.address),
            one_line(&r.field)
        );
        if let Some(group) = &r.expanded {
            block += &format!("; expanded={}", one_line(group));
        }
        if let Some(from) = &r.forwarded {
            block += &format!("; forwarded={}", one_line(from));
        }
        block += "\r\n";
    }
    block.into_bytes()
}

/// Appends one message to an mbox in the mboxrd form: a `From ` separator line, every line
/// of the content that starts with `>*From ` quoted once more, a blank line after it.
pub fn append_mbox(
    out: &mut impl Write,
    m: &ArchivedMessage,
    content: &[u8],
) -> std::io::Result<()> {
    let sender = m
        .sender
        .as_deref()
        .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
        .unwrap_or("MAILER-DAEMON");
    writeln!(out, "From {sender} {}", m.received_at.asctime())?;
    for line in content.split_inclusive(|b| *b == b'\n') {
        let unquoted = line
            .iter()
            .position(|b| *b != b'>')
            .map_or(&line[..0], |at| &line[at..]);
        if unquoted.starts_with(b"From ") {
            out.write_all(b">")?;
        }
        out.write_all(line)?;
    }
    if !content.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ArchivedRecipient, MessageRecipient};
    use mailjournal_queue::{ContentHash, ItemId, Timestamp};

    fn message() -> ArchivedMessage {
        ArchivedMessage {
            id: ItemId(1),
            sender: Some("alice@contoso.com".into()),
            on_behalf_of: None,
            subject: None,
            message_id: None,
            sent_date: None,
            format: "eml".into(),
            content: ContentHash([0; 32]),
            received_at: Timestamp(1_796_155_968_000),
            archived_at: Timestamp(0),
            recipients: vec![MessageRecipient {
                recipient: ArchivedRecipient {
                    address: "bob@contoso.com\r\nX-Evil: 1".into(),
                    field: "bcc".into(),
                    expanded: Some("all@contoso.com".into()),
                    forwarded: None,
                },
                report: ItemId(1),
            }],
            mailboxes: Vec::new(),
            reports: Vec::new(),
        }
    }

    #[test]
    fn mboxrd_quotes_from_lines_and_separates_messages() {
        let mut out = Vec::new();
        append_mbox(
            &mut out,
            &message(),
            b"Subject: x\r\n\r\nFrom here\r\n>From there\r\nend",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "From alice@contoso.com Tue Dec  1 20:12:48 2026\n\
             Subject: x\r\n\r\n>From here\r\n>>From there\r\nend\n\n"
        );
    }

    #[test]
    fn the_envelope_block_is_one_field_a_line_whatever_the_archive_holds() {
        let block = String::from_utf8(envelope_block(&message())).unwrap();
        assert_eq!(
            block,
            "X-Mailjournal-Id: 0000000000000001\r\n\
             X-Mailjournal-Envelope-Sender: alice@contoso.com\r\n\
             X-Mailjournal-Envelope-Recipient: bob@contoso.com  X-Evil: 1; field=bcc; expanded=all@contoso.com\r\n"
        );
    }
}
