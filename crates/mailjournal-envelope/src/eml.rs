//! Standard EML: who sent and received a plain message, from its headers alone. This is the
//! journal type "Standard EML" and the step-down path; it cannot see Bcc recipients that the
//! sender's server removed.

use std::borrow::Cow;

use mail_parser::{Address, MessageParser};

use crate::envelope::{Envelope, Recipient, RecipientField};

/// Reads `From`, `To`, `Cc`, `Bcc`, `Subject` and `Message-ID` from a header block (with or
/// without its body: only the headers are parsed). RFC 2047 words are decoded.
///
/// ```
/// let e = mailjournal_envelope::eml::fields(b"From: A <a@x.com>\r\nTo: b@x.com, c@x.com\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n");
/// assert_eq!(e.sender.as_deref(), Some("a@x.com"));
/// assert_eq!(e.recipients.len(), 2);
/// assert_eq!(e.subject.as_deref(), Some("café"));
/// ```
pub fn fields(headers: &[u8]) -> Envelope<'static> {
    fields_and_date(headers).0
}

/// [`fields`], and the `Date` as seconds since the Unix epoch, from the one parse: an EML
/// item's sent date is part of its de-duplication key, and parsing the headers a second time
/// for it cost as much as the first parse.
pub(crate) fn fields_and_date(headers: &[u8]) -> (Envelope<'static>, Option<i64>) {
    let mut envelope = Envelope::default();
    let Some(message) = MessageParser::new().parse_headers(headers) else {
        envelope
            .warnings
            .push("no header fields could be read".to_owned());
        return (envelope, None);
    };
    envelope.sender = message.from().and_then(first_address);
    envelope.subject = message.subject().map(|s| Cow::Owned(s.to_owned()));
    envelope.message_id = message.message_id().map(|s| Cow::Owned(s.to_owned()));
    for (field, list) in [
        (RecipientField::To, message.to()),
        (RecipientField::Cc, message.cc()),
        (RecipientField::Bcc, message.bcc()),
    ] {
        let Some(list) = list else { continue };
        for addr in list.iter() {
            if let Some(address) = addr.address.as_deref().filter(|a| a.contains('@')) {
                envelope.recipients.push(Recipient {
                    address: Cow::Owned(address.to_owned()),
                    field,
                    expanded: None,
                    forwarded: None,
                });
            }
        }
    }
    (envelope, message.date().map(|d| d.to_timestamp()))
}

fn first_address(list: &Address<'_>) -> Option<Cow<'static, str>> {
    list.iter()
        .find_map(|a| a.address.as_deref().filter(|a| a.contains('@')))
        .map(|a| Cow::Owned(a.to_owned()))
}
