//! Just enough MIME for the report structure: `Content-Type` and `Content-Transfer-Encoding`
//! values, and the direct children of a multipart body.
//!
//! The multipart scan looks for one boundary with a SIMD `memmem` search and accepts a
//! delimiter only at the start of a line (RFC 2046 §5.1.1). A boundary string that appears
//! mid-line is content, not a delimiter: matching it there would silently truncate a part.

use memchr::memmem;

use crate::header;

/// A parsed `Content-Type` value, borrowed from the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentType<'a> {
    /// Media type, e.g. `multipart` (ASCII case as written).
    pub kind: &'a [u8],
    /// Subtype, e.g. `mixed`.
    pub subtype: &'a [u8],
    raw_params: &'a [u8],
}

impl<'a> ContentType<'a> {
    /// Parses `type/subtype; param=value; ...`. A value without a `/` is `text/plain` per
    /// RFC 2045 §5.2 only when absent; a malformed one yields `None`.
    ///
    /// ```
    /// use mailjournal_envelope::mime::ContentType;
    /// let ct = ContentType::parse(b"multipart/mixed;\r\n\tboundary=\"_b_\"").unwrap();
    /// assert!(ct.is(b"multipart", b"mixed"));
    /// assert_eq!(ct.param("Boundary"), Some(&b"_b_"[..]));
    /// ```
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        let value = header::trim(value);
        let semi = memchr::memchr(b';', value).unwrap_or(value.len());
        let media = header::trim(&value[..semi]);
        let slash = memchr::memchr(b'/', media)?;
        let kind = header::trim(&media[..slash]);
        let subtype = header::trim(&media[slash + 1..]);
        if kind.is_empty() || subtype.is_empty() {
            return None;
        }
        Some(ContentType {
            kind,
            subtype,
            raw_params: &value[semi..],
        })
    }

    /// True when the type and subtype equal the given ones, ignoring ASCII case.
    pub fn is(&self, kind: &[u8], subtype: &[u8]) -> bool {
        self.kind.eq_ignore_ascii_case(kind) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// True for any `multipart/*`.
    pub fn is_multipart(&self) -> bool {
        self.kind.eq_ignore_ascii_case(b"multipart")
    }

    /// The value of a parameter (name compared case-insensitively), quotes removed.
    /// Quoted values keep their bytes; backslash escapes are rare in boundaries and charsets
    /// and are returned as written.
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        let mut rest = self.raw_params;
        while let Some(semi) = memchr::memchr(b';', rest) {
            rest = &rest[semi + 1..];
            let eq = memchr::memchr(b'=', rest)?;
            let key = header::trim(&rest[..eq]);
            let after = header::trim_start(&rest[eq + 1..]);
            let (value, used) = if let Some(quoted) = after.strip_prefix(b"\"") {
                let close = memchr::memchr(b'"', quoted).unwrap_or(quoted.len());
                (&quoted[..close], 1 + (close + 1).min(quoted.len()))
            } else {
                let end = memchr::memchr(b';', after).unwrap_or(after.len());
                (header::trim(&after[..end]), end)
            };
            if key.eq_ignore_ascii_case(name.as_bytes()) {
                return Some(value);
            }
            let consumed = rest.len() - after.len() + used;
            rest = &rest[consumed.min(rest.len())..];
        }
        None
    }
}

impl ContentType<'_> {
    /// The `filename` parameter of a `Content-Disposition` value (`attachment; filename=...`).
    pub fn parse_disposition_filename(value: &[u8]) -> Option<&[u8]> {
        // A disposition has no slash: give it a dummy media type so `param` can read it.
        let semi = memchr::memchr(b';', value)?;
        let params = ContentType {
            kind: b"x",
            subtype: b"x",
            raw_params: &value[semi..],
        };
        params.param("filename")
    }
}

/// A `Content-Transfer-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEncoding {
    /// `7bit`, `8bit`, `binary` or absent: the bytes are the content.
    Identity,
    /// `quoted-printable`.
    QuotedPrintable,
    /// `base64`.
    Base64,
    /// Anything else (e.g. `x-uuencode`).
    Unknown,
}

impl TransferEncoding {
    /// Parses a header value; `None` (absent) is identity.
    pub fn parse(value: Option<&[u8]>) -> Self {
        let Some(value) = value.map(header::trim) else {
            return TransferEncoding::Identity;
        };
        if value.eq_ignore_ascii_case(b"7bit")
            || value.eq_ignore_ascii_case(b"8bit")
            || value.eq_ignore_ascii_case(b"binary")
            || value.is_empty()
        {
            TransferEncoding::Identity
        } else if value.eq_ignore_ascii_case(b"quoted-printable") {
            TransferEncoding::QuotedPrintable
        } else if value.eq_ignore_ascii_case(b"base64") {
            TransferEncoding::Base64
        } else {
            TransferEncoding::Unknown
        }
    }
}

/// One direct child of a multipart body, as offsets into the scanned input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// First byte of the part's header block.
    pub start: usize,
    /// First byte of the part's body.
    pub body_start: usize,
    /// Just past the part's last byte (the line break before the next delimiter excluded).
    pub end: usize,
}

impl Part {
    /// The part's header fields.
    pub fn headers<'a>(&self, input: &'a [u8]) -> &'a [u8] {
        let block = header::header_block(&input[self.start..self.end]);
        &input[self.start..self.start + block.fields_len]
    }

    /// The part's body.
    pub fn body<'a>(&self, input: &'a [u8]) -> &'a [u8] {
        &input[self.body_start..self.end]
    }
}

/// How a multipart scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    /// The direct children, in order.
    pub parts: Vec<Part>,
    /// True when the closing delimiter `--boundary--` was found.
    pub closed: bool,
    /// True when the part limit stopped the scan.
    pub truncated: bool,
}

/// Splits the multipart body `input[start..end]` with `boundary` into its direct children.
/// At most `max_parts` parts are returned. One linear scan.
///
/// ```
/// use mailjournal_envelope::mime::split_multipart;
/// let body = b"preamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b\nB: 2\n\ntwo --b inline\n--b--\r\n";
/// let m = split_multipart(body, 0, body.len(), b"b", 10);
/// assert!(m.closed);
/// assert_eq!(m.parts[0].body(body), b"one");
/// assert_eq!(m.parts[1].body(body), b"two --b inline");
/// ```
pub fn split_multipart(
    input: &[u8],
    start: usize,
    end: usize,
    boundary: &[u8],
    max_parts: usize,
) -> Multipart {
    let mut delimiter = Vec::with_capacity(boundary.len() + 2);
    delimiter.extend_from_slice(b"--");
    delimiter.extend_from_slice(boundary);
    let finder = memmem::Finder::new(&delimiter);
    let region = &input[start..end];
    let mut parts = Vec::new();
    let mut open: Option<usize> = None; // start of the current part's headers
    let mut pos = 0;
    while let Some(found) = finder.find(&region[pos..]) {
        let at = pos + found;
        pos = at + delimiter.len();
        // Delimiters start a line.
        if at > 0 && region[at - 1] != b'\n' {
            continue;
        }
        let after = &region[pos..];
        let closing = after.starts_with(b"--");
        let rest = if closing { &after[2..] } else { after };
        // Only transport padding may follow on the delimiter line.
        let line_len = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        if rest[..line_len]
            .iter()
            .any(|b| !matches!(b, b' ' | b'\t' | b'\r'))
        {
            continue;
        }
        if let Some(part_start) = open.take() {
            // The line break before the delimiter belongs to the delimiter.
            let mut part_end = at.saturating_sub(1).max(part_start);
            if part_end > part_start && region[part_end - 1] == b'\r' {
                part_end -= 1;
            }
            let block = header::header_block(&region[part_start..part_end]);
            parts.push(Part {
                start: start + part_start,
                body_start: start + part_start + block.body_start,
                end: start + part_end,
            });
            if parts.len() >= max_parts {
                return Multipart {
                    parts,
                    closed: false,
                    truncated: true,
                };
            }
        }
        if closing {
            return Multipart {
                parts,
                closed: true,
                truncated: false,
            };
        }
        let next_line = (pos + line_len + 1).min(region.len());
        open = Some(next_line);
        pos = next_line;
    }
    // No closing delimiter: the last part runs to the end (a truncated report).
    if let Some(part_start) = open {
        let block = header::header_block(&region[part_start..]);
        parts.push(Part {
            start: start + part_start,
            body_start: start + part_start + block.body_start,
            end,
        });
    }
    Multipart {
        parts,
        closed: false,
        truncated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_quoted_unquoted_and_folded() {
        let ct = ContentType::parse(b"text/plain; charset=\"iso-8859-1\"; format=flowed").unwrap();
        assert_eq!(ct.param("charset"), Some(&b"iso-8859-1"[..]));
        assert_eq!(ct.param("format"), Some(&b"flowed"[..]));
        assert_eq!(ct.param("missing"), None);
        let ct = ContentType::parse(
            b"multipart/report; report-type=delivery-status;\r\n\tboundary=\"_ndr_\"",
        )
        .unwrap();
        assert_eq!(ct.param("boundary"), Some(&b"_ndr_"[..]));
        assert!(ContentType::parse(b"garbage").is_none());
        assert!(ContentType::parse(b"text/").is_none());
    }

    #[test]
    fn boundary_mid_line_is_content() {
        // mail-parser 0.11 truncates here (stalwartlabs/mail-parser#156); we must not.
        let body = b"--B\r\n\r\nvisit --B for details\r\nSECRET\r\n--B--\r\n";
        let m = split_multipart(body, 0, body.len(), b"B", 10);
        assert_eq!(m.parts.len(), 1);
        assert_eq!(m.parts[0].body(body), b"visit --B for details\r\nSECRET");
    }

    #[test]
    fn longer_boundary_with_same_prefix_is_not_a_delimiter() {
        let body = b"--B\n\none\n--BB\nstill one\n--B--\n";
        let m = split_multipart(body, 0, body.len(), b"B", 10);
        assert_eq!(m.parts.len(), 1);
        assert_eq!(m.parts[0].body(body), b"one\n--BB\nstill one");
    }

    #[test]
    fn unclosed_and_limited() {
        let body = b"--B\n\none\n--B\n\ntwo";
        let m = split_multipart(body, 0, body.len(), b"B", 10);
        assert!(!m.closed);
        assert_eq!(m.parts.len(), 2);
        assert_eq!(m.parts[1].body(body), b"two");
        let m = split_multipart(body, 0, body.len(), b"B", 1);
        assert!(m.truncated);
        assert_eq!(m.parts.len(), 1);
    }

    #[test]
    fn transfer_encodings() {
        assert_eq!(TransferEncoding::parse(None), TransferEncoding::Identity);
        assert_eq!(
            TransferEncoding::parse(Some(b" Binary ")),
            TransferEncoding::Identity
        );
        assert_eq!(
            TransferEncoding::parse(Some(b"Quoted-Printable")),
            TransferEncoding::QuotedPrintable
        );
        assert_eq!(
            TransferEncoding::parse(Some(b"BASE64")),
            TransferEncoding::Base64
        );
        assert_eq!(
            TransferEncoding::parse(Some(b"x-uue")),
            TransferEncoding::Unknown
        );
    }
}
