//! The envelope: the report's text part, one `Field: value` a line, naming the original's
//! sender and every recipient it was really delivered to.
//!
//! Accepts the Exchange 2007+ grammar (with the MS-XJRNL extras) and the Exchange 2003
//! `Recipients:` list, field names in any case, CRLF or LF, folded lines and trailing blanks.
//! Unknown lines are kept as warnings, never errors.

use std::borrow::Cow;

/// The recipient bucket a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientField {
    /// `To:` (extended field).
    To,
    /// `Cc:` (extended field).
    Cc,
    /// `Bcc:` (extended field): invisible in the original's headers.
    Bcc,
    /// `Recipient:` (basic field, e.g. mail from the internet), or a 2003 `Recipients:` entry.
    Recipient,
}

impl RecipientField {
    /// `to`, `cc`, `bcc` or `recipient`, as in the `inspect` JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientField::To => "to",
            RecipientField::Cc => "cc",
            RecipientField::Bcc => "bcc",
            RecipientField::Recipient => "recipient",
        }
    }
}

/// One recipient of the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient<'a> {
    /// The bare address.
    pub address: Cow<'a, str>,
    /// The bucket.
    pub field: RecipientField,
    /// The distribution group this recipient was expanded from.
    pub expanded: Option<Cow<'a, str>>,
    /// The original recipient this one was forwarded (redirected) from.
    pub forwarded: Option<Cow<'a, str>>,
}

impl Recipient<'_> {
    /// Detaches from the input.
    pub fn into_owned(self) -> Recipient<'static> {
        Recipient {
            address: Cow::Owned(self.address.into_owned()),
            field: self.field,
            expanded: self.expanded.map(|e| Cow::Owned(e.into_owned())),
            forwarded: self.forwarded.map(|f| Cow::Owned(f.into_owned())),
        }
    }
}

/// The parsed envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// `Sender:`, bare address.
    pub sender: Option<Cow<'a, str>>,
    /// `On-Behalf-Of:`, bare address (the original's From when it differs from Sender).
    pub on_behalf_of: Option<Cow<'a, str>>,
    /// `Subject:`, as decoded from the part.
    pub subject: Option<Cow<'a, str>>,
    /// `Message-Id:` without angle brackets; `None` for Exchange's `Unknown Message-ID`.
    pub message_id: Option<Cow<'a, str>>,
    /// MS-XJRNL `Label:`.
    pub label: Option<Cow<'a, str>>,
    /// MS-XJRNL `Mailbox:`.
    pub mailbox: Option<Cow<'a, str>>,
    /// MS-XJRNL `SentUtc:`, as written.
    pub sent_utc: Option<Cow<'a, str>>,
    /// MS-XJRNL `ReceivedUtc:`, as written.
    pub received_utc: Option<Cow<'a, str>>,
    /// Every recipient line, in order.
    pub recipients: Vec<Recipient<'a>>,
    /// True when the 2003 `Recipients:` list was seen.
    pub exchange2003_list: bool,
    /// Lines that were not understood.
    pub warnings: Vec<String>,
}

impl Envelope<'_> {
    /// Detaches from the input.
    pub fn into_owned(self) -> Envelope<'static> {
        let own = |c: Option<Cow<'_, str>>| c.map(|c| Cow::Owned(c.into_owned()));
        Envelope {
            sender: own(self.sender),
            on_behalf_of: own(self.on_behalf_of),
            subject: own(self.subject),
            message_id: own(self.message_id),
            label: own(self.label),
            mailbox: own(self.mailbox),
            sent_utc: own(self.sent_utc),
            received_utc: own(self.received_utc),
            recipients: self
                .recipients
                .into_iter()
                .map(Recipient::into_owned)
                .collect(),
            exchange2003_list: self.exchange2003_list,
            warnings: self.warnings,
        }
    }
}

/// Parses envelope text, borrowing from it where lines are not folded.
///
/// ```
/// use mailjournal_envelope::envelope::{parse, RecipientField};
/// let e = parse("Sender: alice@contoso.com\r\nSubject: Hi\r\nMessage-Id: <1@x>\r\n\
///                To: bob@contoso.com, Expanded: team@contoso.com\r\nbcc: eve@contoso.com\r\n");
/// assert_eq!(e.sender.as_deref(), Some("alice@contoso.com"));
/// assert_eq!(e.message_id.as_deref(), Some("1@x"));
/// assert_eq!(e.recipients[0].expanded.as_deref(), Some("team@contoso.com"));
/// assert_eq!(e.recipients[1].field, RecipientField::Bcc);
/// ```
pub fn parse(text: &str) -> Envelope<'_> {
    let mut envelope = Envelope::default();
    for line in logical_lines(text) {
        let line_ref: &str = &line;
        if line_ref.trim().is_empty() {
            continue;
        }
        let Some(colon) = line_ref.find(':') else {
            envelope.warnings.push(format!(
                "envelope line without a field name: {:?}",
                clip(line_ref)
            ));
            continue;
        };
        let name = line_ref[..colon].trim();
        let value = map_cow(&line, |l| l[colon + 1..].trim());
        let field = name.to_ascii_lowercase();
        match field.as_str() {
            "sender" => set_once(
                &mut envelope.sender,
                map_cow(&value, bare_address),
                "Sender",
                &mut envelope.warnings,
            ),
            "on-behalf-of" => set_once(
                &mut envelope.on_behalf_of,
                map_cow(&value, bare_address),
                "On-Behalf-Of",
                &mut envelope.warnings,
            ),
            "subject" => set_once(
                &mut envelope.subject,
                value,
                "Subject",
                &mut envelope.warnings,
            ),
            "message-id" => {
                let id = map_cow(&value, |v| {
                    v.trim_start_matches('<').trim_end_matches('>').trim()
                });
                if !id.eq_ignore_ascii_case("Unknown Message-ID") && !id.is_empty() {
                    set_once(
                        &mut envelope.message_id,
                        id,
                        "Message-Id",
                        &mut envelope.warnings,
                    );
                }
            }
            "label" => set_once(&mut envelope.label, value, "Label", &mut envelope.warnings),
            "mailbox" => set_once(
                &mut envelope.mailbox,
                map_cow(&value, bare_address),
                "Mailbox",
                &mut envelope.warnings,
            ),
            "sentutc" => set_once(
                &mut envelope.sent_utc,
                value,
                "SentUtc",
                &mut envelope.warnings,
            ),
            "receivedutc" => set_once(
                &mut envelope.received_utc,
                value,
                "ReceivedUtc",
                &mut envelope.warnings,
            ),
            "to" => recipient(&mut envelope, RecipientField::To, value),
            "cc" => recipient(&mut envelope, RecipientField::Cc, value),
            "bcc" => recipient(&mut envelope, RecipientField::Bcc, value),
            "recipient" => recipient(&mut envelope, RecipientField::Recipient, value),
            "recipients" => {
                envelope.exchange2003_list = true;
                for address in list_2003(&value) {
                    envelope.recipients.push(Recipient {
                        address,
                        field: RecipientField::Recipient,
                        expanded: None,
                        forwarded: None,
                    });
                }
            }
            _ => envelope
                .warnings
                .push(format!("unknown envelope field {:?}", clip(name))),
        }
    }
    envelope
}

fn set_once<'a>(
    slot: &mut Option<Cow<'a, str>>,
    value: Cow<'a, str>,
    name: &str,
    warnings: &mut Vec<String>,
) {
    if slot.is_some() {
        warnings.push(format!(
            "repeated envelope field {name}: the first one is used"
        ));
    } else if !value.is_empty() {
        *slot = Some(value);
    }
}

/// A recipient line: `address[, Expanded: group | , Forwarded: original]`.
fn recipient<'a>(envelope: &mut Envelope<'a>, field: RecipientField, value: Cow<'a, str>) {
    let (address, suffix) = match value.find(',') {
        Some(comma) => (
            map_cow(&value, |v| bare_address(&v[..comma])),
            Some(map_cow(&value, |v| v[comma + 1..].trim())),
        ),
        None => (map_cow(&value, bare_address), None),
    };
    if address.is_empty() || !address.contains('@') {
        envelope.warnings.push(format!(
            "{} line without an address: {:?}",
            field.as_str(),
            clip(&value)
        ));
        return;
    }
    let mut entry = Recipient {
        address,
        field,
        expanded: None,
        forwarded: None,
    };
    if let Some(suffix) = suffix {
        let colon = suffix.find(':');
        let kind = colon.map(|c| suffix[..c].trim().to_ascii_lowercase());
        let source = colon.map(|c| map_cow(&suffix, |s| bare_address(&s[c + 1..])));
        match (kind.as_deref(), source) {
            (Some("expanded"), Some(source)) if !source.is_empty() => entry.expanded = Some(source),
            (Some("forwarded"), Some(source)) if !source.is_empty() => {
                entry.forwarded = Some(source)
            }
            _ => envelope
                .warnings
                .push(format!("unrecognised recipient suffix {:?}", clip(&suffix))),
        }
    }
    envelope.recipients.push(entry);
}

/// The 2003 list: `"Name" <smtp:addr>, "Name" <smtp:addr>` (or bare addresses).
fn list_2003<'a>(value: &Cow<'a, str>) -> Vec<Cow<'a, str>> {
    let mut out = Vec::new();
    let mut rest_start = 0;
    let text: &str = value;
    if text.contains('<') {
        while let Some(open) = text[rest_start..].find('<') {
            let open = rest_start + open;
            let Some(close) = text[open..].find('>') else {
                break;
            };
            let close = open + close;
            let address = map_cow(value, |v| strip_type(v[open + 1..close].trim()));
            if address.contains('@') {
                out.push(address);
            }
            rest_start = close + 1;
        }
    } else {
        for (start, piece) in split_indices(text, ',') {
            let address = map_cow(value, |v| strip_type(v[start..start + piece.len()].trim()));
            if address.contains('@') {
                out.push(address);
            }
        }
    }
    out
}

fn split_indices(text: &str, sep: char) -> impl Iterator<Item = (usize, &str)> {
    let mut start = 0;
    text.split(sep).map(move |piece| {
        let at = start;
        start += piece.len() + sep.len_utf8();
        (at, piece)
    })
}

/// The address inside `<...>` if any, without an Exchange address-type prefix (`smtp:`).
pub fn bare_address(value: &str) -> &str {
    let value = value.trim();
    let inner = match (value.rfind('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value,
    };
    strip_type(inner.trim())
}

fn strip_type(value: &str) -> &str {
    match value.split_once(':') {
        Some((kind, rest)) if kind.eq_ignore_ascii_case("smtp") => rest.trim(),
        _ => value,
    }
}

/// Applies a borrowing function to a `Cow`, keeping the borrow when there is one.
fn map_cow<'a>(value: &Cow<'a, str>, f: impl for<'x> Fn(&'x str) -> &'x str) -> Cow<'a, str> {
    match value {
        Cow::Borrowed(s) => Cow::Borrowed(f(s)),
        Cow::Owned(s) => Cow::Owned(f(s).to_owned()),
    }
}

/// Lines joined with their continuation lines (starting with SP or HTAB); borrowed unless
/// folded.
fn logical_lines(text: &str) -> impl Iterator<Item = Cow<'_, str>> {
    let mut lines = text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .peekable();
    std::iter::from_fn(move || {
        let first = lines.next()?;
        let mut joined: Option<String> = None;
        while let Some(next) = lines.peek() {
            if !next.starts_with([' ', '\t']) || next.trim().is_empty() {
                break;
            }
            let buf = joined.get_or_insert_with(|| first.trim_end().to_owned());
            buf.push(' ');
            buf.push_str(next.trim());
            lines.next();
        }
        Some(joined.map_or(Cow::Borrowed(first), Cow::Owned))
    })
}

fn clip(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_lf_and_odd_case() {
        let e = parse(
            "SENDER: <alice@contoso.com>  \nOn-Behalf-Of: sales@contoso.com\nsubject:  Q3 numbers \n\
             Message-Id: <a@b>\nLabel: L\nMailbox: box@contoso.com\nSentUtc: 2024-05-06T09:14:58Z\n\
             ReceivedUtc: 2024-05-06T09:15:00Z\nTo: dave-assistant@contoso.com, Forwarded: dave@contoso.com\n\
             Recipient: partner@fabrikam.com\nX-Odd: 1\n\n\n",
        );
        assert_eq!(e.sender.as_deref(), Some("alice@contoso.com"));
        assert_eq!(e.on_behalf_of.as_deref(), Some("sales@contoso.com"));
        assert_eq!(e.subject.as_deref(), Some("Q3 numbers"));
        assert_eq!(e.label.as_deref(), Some("L"));
        assert_eq!(e.mailbox.as_deref(), Some("box@contoso.com"));
        assert_eq!(e.sent_utc.as_deref(), Some("2024-05-06T09:14:58Z"));
        assert_eq!(e.received_utc.as_deref(), Some("2024-05-06T09:15:00Z"));
        assert_eq!(
            e.recipients[0].forwarded.as_deref(),
            Some("dave@contoso.com")
        );
        assert_eq!(e.recipients[1].field, RecipientField::Recipient);
        assert_eq!(e.warnings, ["unknown envelope field \"X-Odd\""]);
        assert!(
            matches!(e.sender, Some(Cow::Borrowed(_))),
            "no copy for unfolded lines"
        );
    }

    #[test]
    fn unknown_message_id_and_bad_lines() {
        let e = parse(
            "Sender: a@b.c\nMessage-Id: Unknown Message-ID\nTo: nobody\nCc: x@y.z, Sideways: q@r.s\nnonsense\n",
        );
        assert_eq!(e.message_id, None);
        assert_eq!(e.recipients.len(), 1);
        assert_eq!(e.warnings.len(), 3, "{:?}", e.warnings);
    }

    #[test]
    fn exchange_2003_recipients_list_folded() {
        let e = parse(
            "Sender: \"Alice\" <smtp:alice@contoso.com>\r\nMessage-ID: <p@c>\r\nRecipients: \"Bob\" <smtp:bob@contoso.com>,\r\n \"Carol\" <SMTP:carol@contoso.com>\r\n",
        );
        assert!(e.exchange2003_list);
        assert_eq!(e.sender.as_deref(), Some("alice@contoso.com"));
        let r: Vec<_> = e.recipients.iter().map(|r| r.address.as_ref()).collect();
        assert_eq!(r, ["bob@contoso.com", "carol@contoso.com"]);
    }

    #[test]
    fn repeated_sender_keeps_first() {
        let e = parse("Sender: a@b.c\nSender: x@y.z\n");
        assert_eq!(e.sender.as_deref(), Some("a@b.c"));
        assert_eq!(e.warnings.len(), 1);
    }
}
