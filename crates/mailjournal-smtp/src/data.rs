//! The DATA receiver: dot-unstuffing and end-of-data detection over arbitrary chunks.
//!
//! DATA ends only at `<CRLF>.<CRLF>` (the first CRLF may be the one that ended the DATA
//! command). The SMTP smuggling endings (`\n.\n`, `\r.\r`, `\n.\r\n`, `\r\n.\n`, …) are content,
//! stored byte for byte. A leading dot is removed only on a line that starts after a CRLF.
//! The state carries across chunks, so any split of the stream gives the same bytes.

/// CRLF followed by a dot: the start of a stuffed line or of the terminator.
static DOT_LINE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n."));

/// Where the scanner is relative to line starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the start of the data).
    LineStart,
    /// Inside a line.
    Mid,
    /// After a CR inside a line (held back: it may start a CRLF).
    Cr,
    /// After a dot at the start of a line (held back).
    Dot,
    /// After `.` + CR at the start of a line (held back: it may end the data).
    DotCr,
}

/// Feeds DATA content and yields the unstuffed message bytes.
///
/// ```
/// use mailjournal_smtp::data::DataReceiver;
/// let mut rx = DataReceiver::new();
/// let mut out = Vec::new();
/// let (used, done) = rx.feed(b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n", &mut out);
/// assert!(done);
/// assert_eq!(out, b"Subject: x\r\n\r\n.dot\r\n");
/// assert_eq!(used, 24); // QUIT is left for the command reader
/// ```
#[derive(Debug, Clone)]
pub struct DataReceiver {
    state: State,
    bare_line_ending: bool,
    detect_bare: bool,
    measure_lines: bool,
    /// Octets since the last LF of the message, and the longest line so far (LF excluded).
    line_len: usize,
    longest_line: usize,
}

impl Default for DataReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl DataReceiver {
    /// A receiver positioned just after the 354 reply (a line start).
    pub fn new() -> Self {
        DataReceiver {
            state: State::LineStart,
            bare_line_ending: false,
            detect_bare: true,
            measure_lines: false,
            line_len: 0,
            longest_line: 0,
        }
    }

    /// Whether to measure the longest line of the message (off by default: it costs a scan of
    /// every line). See [`longest_line`](Self::longest_line).
    pub fn measure_lines(mut self, on: bool) -> Self {
        self.measure_lines = on;
        self
    }

    /// The longest line of the message so far, in octets with its CRLF (as RFC 5321
    /// §4.5.3.1.6 counts), after unstuffing; 0 unless [`measure_lines`](Self::measure_lines).
    pub fn longest_line(&self) -> usize {
        self.longest_line
    }

    /// Whether to notice bare CRs and LFs for [`saw_bare_line_ending`](Self::saw_bare_line_ending)
    /// (on by default). Framing and unstuffing are the same either way; a host that stores
    /// content as received can turn it off for a single SIMD search over the content.
    pub fn detect_bare_line_endings(mut self, on: bool) -> Self {
        self.detect_bare = on;
        self
    }

    /// At a dot that starts a line: the end of data (`Some`, with the bytes used), a wait for
    /// more input (`Some`, all used, state set), or a stuffed dot to drop (`None`).
    fn after_dot(&mut self, input: &[u8], dot: usize) -> Option<(usize, bool)> {
        match (input.get(dot + 1), input.get(dot + 2)) {
            (Some(b'\r'), Some(b'\n')) => Some((dot + 3, true)),
            (Some(b'\r'), None) => {
                self.state = State::DotCr;
                Some((input.len(), false))
            }
            (None, _) => {
                self.state = State::Dot;
                Some((input.len(), false))
            }
            _ => None,
        }
    }

    /// Passes the rest of the chunk from `run_start`, holding back a final CR (it may start a
    /// CRLF) and noting a final CRLF (the next chunk starts a line).
    fn pass_tail(&mut self, input: &[u8], run_start: usize, sink: &mut impl FnMut(&[u8])) {
        let tail = &input[run_start..];
        if tail.ends_with(b"\r\n") {
            self.pass(tail, sink);
            self.state = State::LineStart;
        } else if let Some(held) = tail.strip_suffix(b"\r") {
            self.pass(held, sink);
            self.state = State::Cr;
        } else {
            self.pass(tail, sink);
            self.state = State::Mid;
        }
    }

    /// Hands a run to the sink, noting a CR not followed by LF and line lengths when asked to.
    fn pass(&mut self, run: &[u8], sink: &mut impl FnMut(&[u8])) {
        if self.detect_bare && !self.bare_line_ending {
            self.bare_line_ending =
                memchr::memchr_iter(b'\r', run).any(|at| run.get(at + 1) != Some(&b'\n'));
        }
        if self.measure_lines {
            let mut start = 0;
            for lf in memchr::memchr_iter(b'\n', run) {
                let len = self.line_len + (lf + 1 - start);
                self.longest_line = self.longest_line.max(len);
                self.line_len = 0;
                start = lf + 1;
            }
            self.line_len += run.len() - start;
            self.longest_line = self.longest_line.max(self.line_len);
        }
        sink(run);
    }

    /// True once a CR or LF that is not part of a CRLF pair has been seen (always false with
    /// [`detect_bare_line_endings`](Self::detect_bare_line_endings) off).
    pub fn saw_bare_line_ending(&self) -> bool {
        self.bare_line_ending
    }

    /// Scans `input`, appends the message bytes to `out`, and returns how many input bytes
    /// were used and whether the end of data was reached (the terminator is used, not output).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        self.feed_with(input, |bytes| out.extend_from_slice(bytes))
    }

    /// Like [`feed`](Self::feed), but hands the message bytes to `sink` as slices of `input`
    /// (long runs: a line is not copied on its own), so the caller decides where they go.
    pub fn feed_with(&mut self, input: &[u8], mut sink: impl FnMut(&[u8])) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Mid if !self.detect_bare => {
                    // Fast path: the only sequence that matters to the framing is CRLF + dot
                    // (a stuffed line or the terminator); one SIMD search finds them all.
                    let mut run_start = i;
                    for n in DOT_LINE.find_iter(&input[i..]) {
                        let dot = i + n + 2;
                        if dot <= run_start {
                            continue;
                        }
                        self.pass(&input[run_start..dot], &mut sink);
                        match self.after_dot(input, dot) {
                            Some(result) => return result,
                            None => run_start = dot + 1,
                        }
                    }
                    self.pass_tail(input, run_start, &mut sink);
                    return (input.len(), false);
                }
                State::Mid => {
                    // Checking path: visit every LF to notice bare ones (and, in `pass`, bare
                    // CRs); drop stuffed dots without leaving the scan.
                    let mut run_start = i;
                    for n in memchr::memchr_iter(b'\n', &input[i..]) {
                        let at = i + n;
                        if at < run_start {
                            continue;
                        }
                        if at == 0 || input[at - 1] != b'\r' {
                            self.bare_line_ending = true;
                            continue;
                        }
                        let line_start = at + 1;
                        if input.get(line_start) != Some(&b'.') {
                            continue;
                        }
                        self.pass(&input[run_start..line_start], &mut sink);
                        match self.after_dot(input, line_start) {
                            Some(result) => return result,
                            None => run_start = line_start + 1,
                        }
                    }
                    self.pass_tail(input, run_start, &mut sink);
                    return (input.len(), false);
                }
                State::LineStart => {
                    if input[i] == b'.' {
                        i += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::Mid;
                    }
                }
                State::Cr => {
                    if input[i] == b'\n' {
                        self.pass(b"\r\n", &mut sink);
                        i += 1;
                        self.state = State::LineStart;
                    } else {
                        // A bare CR: content. The next byte is read afresh in Mid.
                        self.bare_line_ending = true;
                        self.pass(b"\r", &mut sink);
                        self.state = State::Mid;
                    }
                }
                State::Dot => {
                    if input[i] == b'\r' {
                        i += 1;
                        self.state = State::DotCr;
                    } else {
                        // A dot-stuffed line: the leading dot goes, the byte is read in Mid.
                        self.state = State::Mid;
                    }
                }
                State::DotCr => {
                    if input[i] == b'\n' {
                        return (i + 1, true);
                    }
                    // `.` + CR + something else: the dot goes, the CR is content or starts a CRLF.
                    self.state = State::Cr;
                }
            }
        }
        (input.len(), false)
    }
}

/// Client-side dot-stuffing (RFC 5321 §4.5.2), for tests and tools: the wire form of `body`
/// including the terminating `.CRLF`. A body not ending in CRLF gets one.
///
/// ```
/// use mailjournal_smtp::data::dot_stuff;
/// assert_eq!(dot_stuff(b".a\r\nb"), b"..a\r\nb\r\n.\r\n");
/// ```
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    // Each pass starts at a line start: the body's start or just after a CRLF.
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'.' {
            out.push(b'.');
        }
        match memchr::memmem::find(&body[i..], b"\r\n") {
            Some(n) => {
                out.extend_from_slice(&body[i..i + n + 2]);
                i += n + 2;
            }
            None => {
                out.extend_from_slice(&body[i..]);
                i = body.len();
            }
        }
    }
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(wire: &[u8]) -> (Vec<u8>, usize, bool) {
        let mut rx = DataReceiver::new();
        let mut out = Vec::new();
        let (used, done) = rx.feed(wire, &mut out);
        (out, used, done)
    }

    #[test]
    fn smuggling_endings_are_content_and_kept() {
        for vector in [
            &b"\n.\n"[..],
            b"\r.\r",
            b"\r.\n",
            b"\n.\r",
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n\x00.\r\n",
        ] {
            let mut wire = b"Subject: a\r\n\r\nhello".to_vec();
            wire.extend_from_slice(vector);
            wire.extend_from_slice(
                b"MAIL FROM:<spoof@x.com>\r\nRCPT TO:<j@x.com>\r\nDATA\r\nforged\r\n",
            );
            let (out, used, done) = receive(&wire);
            assert!(!done, "{vector:?} must not end DATA");
            assert_eq!(used, wire.len());
            assert_eq!(out, wire, "{vector:?} stored byte for byte");
        }
        // `\r\n.\n`: a dot at a line start followed by a bare LF is a stuffed line, not an end.
        let (out, _, done) = receive(b"a\r\n.\nMAIL FROM:<x@y.z>\r\n");
        assert!(!done);
        assert_eq!(out, b"a\r\n\nMAIL FROM:<x@y.z>\r\n");
    }

    #[test]
    fn terminator_at_start_and_after_crlf() {
        assert_eq!(receive(b".\r\n"), (vec![], 3, true));
        assert_eq!(receive(b"x\r\n.\r\nNEXT"), (b"x\r\n".to_vec(), 6, true));
        assert_eq!(receive(b"..\r\n.\r\n"), (b".\r\n".to_vec(), 7, true));
    }

    #[test]
    fn every_split_gives_the_same_bytes_in_both_modes() {
        let wire = b"a\r\n..b\r\n.\rc\r\n\r\r\n\n.\n\r\n.x\r\n\r\n.\r\n";
        let (whole, whole_used, whole_done) = receive(wire);
        assert!(whole_done);
        assert_eq!(whole, b"a\r\n.b\r\n\rc\r\n\r\r\n\n.\n\r\nx\r\n\r\n");
        for detect in [true, false] {
            for split in 0..wire.len() {
                let mut rx = DataReceiver::new().detect_bare_line_endings(detect);
                let mut out = Vec::new();
                let (a, done_a) = rx.feed(&wire[..split], &mut out);
                assert_eq!(a, split);
                assert!(!done_a);
                let (b, done_b) = rx.feed(&wire[split..], &mut out);
                assert!(done_b, "split {split}, detect {detect}");
                assert_eq!(
                    (out.as_slice(), split + b),
                    (whole.as_slice(), whole_used),
                    "split {split}, detect {detect}"
                );
            }
        }
    }

    #[test]
    fn longest_line_counts_message_octets_across_chunks() {
        let mut rx = DataReceiver::new()
            .detect_bare_line_endings(false)
            .measure_lines(true);
        let mut out = Vec::new();
        rx.feed(b"ab\r\n..cdef", &mut out);
        rx.feed(b"gh\r", &mut out);
        assert_eq!(
            rx.longest_line(),
            7,
            "'.cdefgh' so far, the stuffing dot excluded"
        );
        let (_, done) = rx.feed(b"\nx\r\n.\r\n", &mut out);
        assert!(done);
        assert_eq!(rx.longest_line(), 9, "'.cdefgh' and its CRLF");
        assert_eq!(out, b"ab\r\n.cdefgh\r\nx\r\n");
    }

    #[test]
    fn bare_line_endings_are_noticed() {
        let mut rx = DataReceiver::new();
        rx.feed(b"a\r\nb\r\n", &mut Vec::new());
        assert!(!rx.saw_bare_line_ending());
        rx.feed(b"c\nd", &mut Vec::new());
        assert!(rx.saw_bare_line_ending());
    }
}
