//! Raw header blocks: where they end and the fields they hold, borrowed from the input.
//!
//! Works on both CRLF and bare-LF input (real journal reports are stored either way) and on
//! folded fields. Never allocates; each call is one linear scan.

use memchr::memchr;

/// Where a header block ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderBlock {
    /// Length of the header fields, without the blank line.
    pub fields_len: usize,
    /// Offset of the body: after the blank line, or the input's end when there is none.
    pub body_start: usize,
    /// False when the input ended before a blank line.
    pub terminated: bool,
}

/// Finds the blank line that ends the header block at the start of `input`.
///
/// ```
/// use mailjournal_envelope::header::header_block;
/// let b = header_block(b"A: 1\r\nB: 2\r\n\r\nbody");
/// assert_eq!((b.fields_len, b.body_start, b.terminated), (12, 14, true));
/// let b = header_block(b"A: 1\n\nbody");
/// assert_eq!((b.fields_len, b.body_start), (5, 6));
/// ```
pub fn header_block(input: &[u8]) -> HeaderBlock {
    // A blank line at the very start means an empty header block.
    if input.starts_with(b"\r\n") {
        return HeaderBlock {
            fields_len: 0,
            body_start: 2,
            terminated: true,
        };
    }
    if input.starts_with(b"\n") {
        return HeaderBlock {
            fields_len: 0,
            body_start: 1,
            terminated: true,
        };
    }
    let mut pos = 0;
    while let Some(nl) = memchr(b'\n', &input[pos..]) {
        let line_start = pos + nl + 1;
        let rest = &input[line_start..];
        if rest.starts_with(b"\n") {
            return HeaderBlock {
                fields_len: line_start,
                body_start: line_start + 1,
                terminated: true,
            };
        }
        if rest.starts_with(b"\r\n") {
            return HeaderBlock {
                fields_len: line_start,
                body_start: line_start + 2,
                terminated: true,
            };
        }
        pos = line_start;
    }
    HeaderBlock {
        fields_len: input.len(),
        body_start: input.len(),
        terminated: false,
    }
}

/// One header field: its name and raw value (folding kept, leading whitespace and the final
/// line ending removed), with the byte range of the whole field in the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The name as written.
    pub name: &'a [u8],
    /// The raw value.
    pub value: &'a [u8],
    /// Offset of the field's first byte in the block.
    pub start: usize,
    /// Offset just past the field's last line ending.
    pub end: usize,
}

impl Field<'_> {
    /// True when the name equals `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// Iterates over the fields of a header block (as returned by [`header_block`]'s
/// `fields_len`). Lines without a colon are skipped: they are not fields.
///
/// ```
/// use mailjournal_envelope::header::fields;
/// let block = b"Subject: one\r\n two\r\nX-Empty:\r\n";
/// let all: Vec<_> = fields(block).collect();
/// assert_eq!(all[0].value, b"one\r\n two");
/// assert!(all[1].is("x-empty") && all[1].value.is_empty());
/// ```
pub fn fields(block: &[u8]) -> Fields<'_> {
    Fields { block, pos: 0 }
}

/// Iterator returned by [`fields`].
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    block: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        loop {
            if self.pos >= self.block.len() {
                return None;
            }
            let start = self.pos;
            // The field runs until a line that does not start with SP/HTAB.
            let mut end = start;
            loop {
                match memchr(b'\n', &self.block[end..]) {
                    None => {
                        end = self.block.len();
                        break;
                    }
                    Some(nl) => {
                        end += nl + 1;
                        match self.block.get(end) {
                            Some(b' ' | b'\t') => continue,
                            _ => break,
                        }
                    }
                }
            }
            self.pos = end;
            let raw = &self.block[start..end];
            let Some(colon) = memchr(b':', raw) else {
                continue;
            };
            let name = trim_end(&raw[..colon]);
            if name.is_empty()
                || name
                    .iter()
                    .any(|b| b.is_ascii_whitespace() && *b != b' ' && *b != b'\t')
            {
                continue;
            }
            let value = trim(&raw[colon + 1..]);
            return Some(Field {
                name,
                value,
                start,
                end,
            });
        }
    }
}

/// The first field named `name` (ASCII case-insensitive).
pub fn find<'a>(block: &'a [u8], name: &str) -> Option<Field<'a>> {
    fields(block).find(|f| f.is(name))
}

/// Removes leading and trailing ASCII whitespace (CR and LF included).
pub fn trim(bytes: &[u8]) -> &[u8] {
    trim_end(trim_start(bytes))
}

/// Removes leading ASCII whitespace.
pub fn trim_start(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[n..]
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    &bytes[..bytes.len() - n]
}

/// Unfolds a raw value into one line: each line break and the whitespace run around it become
/// a single space. Allocates only when the value is folded.
pub fn unfold(value: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if memchr(b'\n', value).is_none() && memchr(b'\r', value).is_none() {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = Vec::with_capacity(value.len());
    let mut in_break = false;
    for &b in value {
        if b == b'\r' || b == b'\n' {
            in_break = true;
            continue;
        }
        if in_break {
            if b == b' ' || b == b'\t' {
                continue;
            }
            while out.last().is_some_and(|c: &u8| *c == b' ' || *c == b'\t') {
                out.pop();
            }
            out.push(b' ');
            in_break = false;
        }
        out.push(b);
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_fields_and_mixed_line_endings() {
        let block = b"Sender: a@b.c\nSubject: x\r\n\ty\nNoColon line\nTo:  d@e.f  \n";
        let all: Vec<_> = fields(block).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].value, b"x\r\n\ty");
        assert_eq!(&*unfold(all[1].value), b"x y");
        assert_eq!(all[2].value, b"d@e.f");
        assert_eq!(&block[all[0].start..all[0].end], b"Sender: a@b.c\n");
        assert!(find(block, "SUBJECT").is_some());
    }

    #[test]
    fn unterminated_and_empty_blocks() {
        assert!(!header_block(b"A: 1\r\nB: 2").terminated);
        assert_eq!(header_block(b"").body_start, 0);
        assert_eq!(header_block(b"\r\nbody").body_start, 2);
    }
}
