//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463) on every reply.

use std::fmt;

/// An enhanced status code `class.subject.detail`, e.g. `2.0.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedCode(pub u8, pub u16, pub u16);

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One reply: a three-digit code, an enhanced code and one or more text lines.
///
/// ```
/// use mailjournal_smtp::{EnhancedCode, Reply};
/// let r = Reply::new(250, EnhancedCode(2, 0, 0), "Ok: queued as 42");
/// assert_eq!(r.to_string(), "250 2.0.0 Ok: queued as 42\r\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code, 200–599.
    pub code: u16,
    /// The enhanced status code; `None` only for the greeting and EHLO lines, which RFC 2034
    /// leaves without one.
    pub enhanced: Option<EnhancedCode>,
    /// The text lines; never empty.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced code.
    pub fn new(code: u16, enhanced: EnhancedCode, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            lines: vec![sanitize(text.into())],
        }
    }

    /// A reply without an enhanced code (greeting, EHLO).
    pub fn plain(code: u16, lines: Vec<String>) -> Self {
        let mut lines: Vec<String> = lines.into_iter().map(sanitize).collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    /// True for 2xx and 3xx replies.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Writes the wire form, CRLF-terminated, `-` on every line but the last.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let text = match self.enhanced {
                Some(e) => format!("{}{sep}{e} {line}\r\n", self.code),
                None => format!("{}{sep}{line}\r\n", self.code),
            };
            out.extend_from_slice(text.as_bytes());
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write_to(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

/// Reply text never carries CR or LF: a line break inside text would forge a reply line.
fn sanitize(text: String) -> String {
    if text.contains(['\r', '\n']) {
        text.replace(['\r', '\n'], " ")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiline_and_injection_safe() {
        let r = Reply::plain(
            250,
            vec![
                "mx.example.com".into(),
                "PIPELINING".into(),
                "SIZE 10".into(),
            ],
        );
        assert_eq!(
            r.to_string(),
            "250-mx.example.com\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
        let r = Reply::new(550, EnhancedCode(5, 7, 1), "no\r\n250 2.0.0 forged");
        assert_eq!(r.to_string(), "550 5.7.1 no  250 2.0.0 forged\r\n");
        assert!(!r.is_positive());
    }
}
