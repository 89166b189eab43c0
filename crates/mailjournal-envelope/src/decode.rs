//! Decoding a small text part (the envelope) to UTF-8: transfer encoding, then charset.
//! Borrows when the bytes already are UTF-8 text, which is what Exchange Online writes.

use std::borrow::Cow;

use mail_parser::decoders::{
    base64::base64_decode, charsets::map::charset_decoder,
    quoted_printable::quoted_printable_decode,
};

use crate::mime::TransferEncoding;

/// The decoded text and what had to be tolerated on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The text.
    pub text: Cow<'a, str>,
    /// Problems met and worked around.
    pub warnings: Vec<String>,
}

/// Decodes `body` with its transfer encoding and charset.
///
/// ```
/// use mailjournal_envelope::{decode::decode_text, mime::TransferEncoding};
/// let d = decode_text(b"Subject: Gr=FC=DFe", TransferEncoding::QuotedPrintable, Some(b"iso-8859-1"));
/// assert_eq!(d.text, "Subject: Grüße");
/// let d = decode_text(b"Sender: a@b.c", TransferEncoding::Identity, Some(b"us-ascii"));
/// assert!(matches!(d.text, std::borrow::Cow::Borrowed(_)));
/// ```
pub fn decode_text<'a>(
    body: &'a [u8],
    encoding: TransferEncoding,
    charset: Option<&[u8]>,
) -> Decoded<'a> {
    let mut warnings = Vec::new();
    let bytes: Cow<'a, [u8]> = match encoding {
        TransferEncoding::Identity => Cow::Borrowed(body),
        TransferEncoding::QuotedPrintable => match quoted_printable_decode(body) {
            Some(decoded) => Cow::Owned(decoded),
            None => {
                warnings.push("envelope part: invalid quoted-printable, read as is".to_owned());
                Cow::Borrowed(body)
            }
        },
        TransferEncoding::Base64 => match base64_decode(body) {
            Some(decoded) => Cow::Owned(decoded),
            None => {
                warnings.push("envelope part: invalid base64, read as is".to_owned());
                Cow::Borrowed(body)
            }
        },
        TransferEncoding::Unknown => {
            warnings.push("envelope part: unknown transfer encoding, read as is".to_owned());
            Cow::Borrowed(body)
        }
    };
    let utf8_family = charset.is_none_or(|c| {
        c.eq_ignore_ascii_case(b"utf-8")
            || c.eq_ignore_ascii_case(b"us-ascii")
            || c.eq_ignore_ascii_case(b"utf8")
            || c.eq_ignore_ascii_case(b"ascii")
    });
    let text = match bytes {
        Cow::Borrowed(b) if utf8_family || b.is_ascii() => match std::str::from_utf8(b) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => lossy(b, &mut warnings),
        },
        bytes if utf8_family || bytes.is_ascii() => match String::from_utf8(bytes.into_owned()) {
            Ok(s) => Cow::Owned(s),
            Err(e) => lossy(e.as_bytes(), &mut warnings),
        },
        bytes => match charset.and_then(charset_decoder) {
            Some(decoder) => Cow::Owned(decoder(&bytes)),
            None => {
                let name = String::from_utf8_lossy(charset.unwrap_or_default()).into_owned();
                warnings.push(format!(
                    "envelope part: unknown charset {name:?}, read as UTF-8"
                ));
                lossy(&bytes, &mut warnings)
            }
        },
    };
    Decoded { text, warnings }
}

fn lossy<'a>(bytes: &[u8], warnings: &mut Vec<String>) -> Cow<'a, str> {
    let text = String::from_utf8_lossy(bytes).into_owned();
    if text.contains('\u{fffd}') {
        warnings.push(
            "envelope part: bytes that are not valid in its charset were replaced".to_owned(),
        );
    }
    Cow::Owned(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_unknown_charsets() {
        let d = decode_text(b"U2VuZGVyOiBhQGIuYw==\r\n", TransferEncoding::Base64, None);
        assert_eq!(d.text, "Sender: a@b.c");
        assert!(d.warnings.is_empty());
        let d = decode_text(b"caf\xe9", TransferEncoding::Identity, Some(b"x-unknown"));
        assert_eq!(d.text, "caf\u{fffd}");
        assert_eq!(d.warnings.len(), 2);
        let d = decode_text(b"=ZZ", TransferEncoding::QuotedPrintable, None);
        assert_eq!(d.text, "=ZZ");
        assert_eq!(d.warnings.len(), 1);
    }

    #[test]
    fn declared_utf8_but_latin1_bytes_are_replaced_not_rejected() {
        let d = decode_text(
            b"Subject: caf\xe9",
            TransferEncoding::Identity,
            Some(b"utf-8"),
        );
        assert_eq!(d.text, "Subject: caf\u{fffd}");
    }
}
