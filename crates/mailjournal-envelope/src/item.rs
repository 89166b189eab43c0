//! [`JournalItem`]: one item that arrived at a journal address, parsed.

use std::borrow::Cow;

use crate::envelope::{self, Envelope, Recipient};
use crate::header::{self, HeaderBlock};
use crate::mime::{ContentType, Part, TransferEncoding, split_multipart};
use crate::{decode, eml};

/// Largest top-level header block read; real reports carry a few KiB.
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// Most direct children of a report read; real reports have two or three.
pub const MAX_PARTS: usize = 1000;
/// Largest envelope part decoded; one line a recipient, so this allows ~100 000 recipients.
pub const MAX_ENVELOPE_BYTES: usize = 8 << 20;

/// The two shapes an item can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// An Exchange envelope journal report.
    #[default]
    Envelope,
    /// A plain message, read from its headers.
    Eml,
}

impl Format {
    /// `envelope` or `eml`, as in the `inspect` JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Envelope => "envelope",
            Format::Eml => "eml",
        }
    }
}

/// Which Exchange generation wrote a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportVersion {
    /// Exchange 2007 and later, Exchange Online: `X-MS-Journal-Report`.
    Exchange2007,
    /// Exchange 2003: `Content-Identifier: ExJournalReport`, `Recipients:` list.
    Exchange2003,
}

impl ReportVersion {
    /// `exchange2007` or `exchange2003`, as in the `inspect` JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportVersion::Exchange2007 => "exchange2007",
            ReportVersion::Exchange2003 => "exchange2003",
        }
    }
}

/// Why an item that arrived for an EEJ definition was read as plain EML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepDown {
    /// Nothing to parse.
    EmptyInput,
    /// No `X-MS-Journal-Report` (or organisation / cross-premises spelling, or the 2003 marker).
    NoJournalHeader,
    /// The top-level header block is larger than [`MAX_HEADER_BYTES`].
    HeaderTooLarge,
    /// The report is not `multipart/*`, or has no boundary.
    NotMultipart,
    /// More than [`MAX_PARTS`] direct children.
    TooManyParts,
    /// No text part holding the envelope, or one larger than [`MAX_ENVELOPE_BYTES`].
    NoEnvelopePart,
    /// The envelope names no sender.
    NoSender,
    /// No attached original at all.
    NoOriginalPart,
    /// The original is attached as something other than `message/rfc822`.
    OriginalNotRfc822,
    /// The original is attached as TNEF (`winmail.dat`) or an Outlook `.msg` file.
    TnefOriginal,
    /// An NDR wraps something that wraps again: only one level is unwrapped.
    NestingTooDeep,
}

impl StepDown {
    /// A stable snake_case code, as in the `inspect` JSON.
    pub fn code(self) -> &'static str {
        match self {
            StepDown::EmptyInput => "empty_input",
            StepDown::NoJournalHeader => "no_journal_header",
            StepDown::HeaderTooLarge => "header_too_large",
            StepDown::NotMultipart => "not_multipart",
            StepDown::TooManyParts => "too_many_parts",
            StepDown::NoEnvelopePart => "no_envelope_part",
            StepDown::NoSender => "no_sender",
            StepDown::NoOriginalPart => "no_original_part",
            StepDown::OriginalNotRfc822 => "original_not_rfc822",
            StepDown::TnefOriginal => "tnef_original",
            StepDown::NestingTooDeep => "nesting_too_deep",
        }
    }
}

/// A byte range of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub offset: usize,
    /// Number of bytes.
    pub length: usize,
}

impl Span {
    fn of(part: &Part) -> Span {
        Span {
            offset: part.body_start,
            length: part.end - part.body_start,
        }
    }

    fn shifted(self, by: usize) -> Span {
        Span {
            offset: self.offset + by,
            length: self.length,
        }
    }

    /// The bytes of the span.
    pub fn slice(self, input: &[u8]) -> &[u8] {
        &input[self.offset..self.offset + self.length]
    }
}

/// How to read items and what to archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseOptions {
    /// The definition's journal type: `Envelope` (EEJ, with step-down) or `Eml`.
    pub journal_type: Format,
    /// Archive the decrypted copy when the report carries one.
    pub prefer_clear_text_version: bool,
    /// Remove `X-MS-Exchange-Organization-BCC` and `X-MS-Exchange-CrossPremises-BCC` from the
    /// archived message.
    pub remove_journal_headers: bool,
}

/// The header fields [`ParseOptions::remove_journal_headers`] removes.
pub const JOURNAL_HEADERS: [&str; 2] = [
    "X-MS-Exchange-Organization-BCC",
    "X-MS-Exchange-CrossPremises-BCC",
];

/// One parsed journal item, borrowing from its input.
///
/// ```
/// use mailjournal_envelope::{Format, JournalItem, ParseOptions};
/// let report = b"X-MS-Journal-Report:\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
/// --b\r\nContent-Type: text/plain\r\n\r\nSender: a@x.com\r\nSubject: Hi\r\nMessage-Id: <1@x>\r\nBcc: c@x.com\r\n\
/// --b\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <1@x>\r\nSubject: Hi\r\n\r\nbody\r\n--b--\r\n";
/// let item = JournalItem::parse(report, &ParseOptions::default());
/// assert_eq!(item.format(), Format::Envelope);
/// assert_eq!(item.sender(), Some("a@x.com"));
/// assert_eq!(item.recipients()[0].address, "c@x.com");
/// assert!(item.bcc_visible());
/// assert!(item.original_bytes().unwrap().ends_with(b"\r\n\r\nbody"));
/// ```
#[derive(Debug, Clone)]
pub struct JournalItem<'a> {
    input: &'a [u8],
    format: Format,
    step_down: Option<StepDown>,
    report_version: Option<ReportVersion>,
    unwrapped_ndr: bool,
    fields: Envelope<'a>,
    original: Option<Span>,
    original_encoding: TransferEncoding,
    clear_text: Option<Span>,
    clear_text_encoding: TransferEncoding,
    warnings: Vec<String>,
    /// An EML item's `Date`, read with its other fields; `None` for an envelope report,
    /// whose original's headers [`sent_at`](Self::sent_at) parses.
    eml_sent_at: Option<i64>,
}

impl<'a> JournalItem<'a> {
    /// Parses an item. Never fails and never panics: a malformed report steps down to EML
    /// and says why.
    pub fn parse(input: &'a [u8], options: &ParseOptions) -> JournalItem<'a> {
        if options.journal_type == Format::Eml {
            return Self::eml(input, None, None, Vec::new());
        }
        match Report::read(input, 0) {
            Ok(item) => item,
            Err(failure) => Self::eml(
                input,
                Some(failure.reason),
                failure.version,
                failure.warnings,
            ),
        }
    }

    fn eml(
        input: &'a [u8],
        step_down: Option<StepDown>,
        report_version: Option<ReportVersion>,
        mut warnings: Vec<String>,
    ) -> Self {
        let block = header::header_block(input);
        let headers = &input[..block.fields_len.min(MAX_HEADER_BYTES)];
        let (mut fields, sent_at) = eml::fields_and_date(headers);
        warnings.append(&mut fields.warnings);
        if !block.terminated && !input.is_empty() {
            warnings.push("no blank line after the header block".to_owned());
        }
        JournalItem {
            input,
            format: Format::Eml,
            step_down,
            report_version,
            unwrapped_ndr: false,
            fields,
            original: Some(Span {
                offset: 0,
                length: input.len(),
            }),
            original_encoding: TransferEncoding::Identity,
            clear_text: None,
            clear_text_encoding: TransferEncoding::Identity,
            warnings,
            eml_sent_at: sent_at,
        }
    }

    /// The raw input.
    pub fn input(&self) -> &'a [u8] {
        self.input
    }
    /// Envelope or EML.
    pub fn format(&self) -> Format {
        self.format
    }
    /// Why a report was read as EML, if it was.
    pub fn step_down(&self) -> Option<StepDown> {
        self.step_down
    }
    /// The Exchange generation that wrote the report (kept on step-down: what it claimed).
    pub fn report_version(&self) -> Option<ReportVersion> {
        self.report_version
    }
    /// True when the report arrived wrapped in an NDR from the alternate journaling mailbox.
    pub fn unwrapped_ndr(&self) -> bool {
        self.unwrapped_ndr
    }
    /// The sender: the envelope's `Sender:`, or the `From:` address for EML.
    pub fn sender(&self) -> Option<&str> {
        self.fields.sender.as_deref()
    }
    /// The envelope's `On-Behalf-Of:`.
    pub fn on_behalf_of(&self) -> Option<&str> {
        self.fields.on_behalf_of.as_deref()
    }
    /// The subject, decoded to UTF-8.
    pub fn subject(&self) -> Option<&str> {
        self.fields.subject.as_deref()
    }
    /// The original's Message-ID without angle brackets.
    pub fn message_id(&self) -> Option<&str> {
        self.fields.message_id.as_deref()
    }
    /// Every recipient, in order.
    pub fn recipients(&self) -> &[Recipient<'a>] {
        &self.fields.recipients
    }
    /// All envelope fields, the MS-XJRNL extras included.
    pub fn envelope(&self) -> &Envelope<'a> {
        &self.fields
    }
    /// False for EML: headers do not show Bcc recipients the sending server removed, so an
    /// EML item's recipient list may be incomplete.
    pub fn bcc_visible(&self) -> bool {
        self.format == Format::Envelope
    }
    /// Where the original message lies in the input (for EML, the whole input).
    pub fn original(&self) -> Option<Span> {
        self.original
    }
    /// Where the decrypted clear-text copy lies, when the report carries one.
    pub fn clear_text(&self) -> Option<Span> {
        self.clear_text
    }
    /// What was tolerated while parsing.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The original's bytes as attached (still transfer-encoded if the report encoded it).
    pub fn original_bytes(&self) -> Option<&'a [u8]> {
        self.original.map(|s| s.slice(self.input))
    }

    /// The span that [`archived_message`](Self::archived_message) starts from, and whether it
    /// is the clear-text copy.
    pub fn archived_span(&self, options: &ParseOptions) -> Option<(Span, bool)> {
        match (options.prefer_clear_text_version, self.clear_text) {
            (true, Some(span)) => Some((span, true)),
            _ => self.original.map(|span| (span, false)),
        }
    }

    /// The message to archive: the original, or the clear-text copy when preferred and
    /// present, transfer-decoded if the report encoded it, and with the journal headers
    /// removed when asked. Borrows when nothing needs to change.
    ///
    /// ```
    /// use mailjournal_envelope::{JournalItem, ParseOptions, Format};
    /// let eml = b"X-MS-Exchange-Organization-BCC: boss@x.com,\r\n\tcfo@x.com\r\nSubject: s\r\n\r\nbody";
    /// let opts = ParseOptions { journal_type: Format::Eml, remove_journal_headers: true, ..Default::default() };
    /// let item = JournalItem::parse(eml, &opts);
    /// assert_eq!(&*item.archived_message(&opts), b"Subject: s\r\n\r\nbody");
    /// ```
    pub fn archived_message(&self, options: &ParseOptions) -> Cow<'a, [u8]> {
        let Some((span, clear)) = self.archived_span(options) else {
            return Cow::Borrowed(self.input);
        };
        let encoding = if clear {
            self.clear_text_encoding
        } else {
            self.original_encoding
        };
        let raw = span.slice(self.input);
        let message: Cow<'a, [u8]> = match encoding {
            TransferEncoding::Base64 => mail_parser::decoders::base64::base64_decode(raw)
                .map_or(Cow::Borrowed(raw), Cow::Owned),
            TransferEncoding::QuotedPrintable => {
                mail_parser::decoders::quoted_printable::quoted_printable_decode(raw)
                    .map_or(Cow::Borrowed(raw), Cow::Owned)
            }
            _ => Cow::Borrowed(raw),
        };
        if options.remove_journal_headers {
            match message {
                Cow::Borrowed(m) => remove_header_fields(m, &JOURNAL_HEADERS),
                Cow::Owned(m) => {
                    Cow::Owned(remove_header_fields(&m, &JOURNAL_HEADERS).into_owned())
                }
            }
        } else {
            message
        }
    }

    /// The first header field `name` of the archived message (unfolded, trimmed), e.g. its
    /// `Date` for the de-duplication key.
    pub fn archived_header(&self, options: &ParseOptions, name: &str) -> Option<String> {
        let message = self.archived_message(options);
        let block = header::header_block(&message);
        let field = header::find(&message[..block.fields_len], name)?;
        Some(String::from_utf8_lossy(&header::unfold(field.value)).into_owned())
    }
}

impl JournalItem<'_> {
    /// The archived message's `Date`, as seconds since the Unix epoch (UTC): with the
    /// Message-ID, the key that identifies one message across its several journal reports.
    ///
    /// ```
    /// use mailjournal_envelope::{Format, JournalItem, ParseOptions};
    /// let opts = ParseOptions { journal_type: Format::Eml, ..Default::default() };
    /// let item = JournalItem::parse(b"Date: Mon, 6 May 2024 09:14:58 +0200\r\n\r\n", &opts);
    /// assert_eq!(item.sent_at(&opts), Some(1_714_979_698));
    /// ```
    pub fn sent_at(&self, options: &ParseOptions) -> Option<i64> {
        let message = self.archived_message(options);
        // An EML item archived as received: its headers were parsed already, Date with them.
        if self.format == Format::Eml && std::ptr::eq(&*message, self.input) {
            return self.eml_sent_at;
        }
        let block = header::header_block(&message);
        let headers = &message[..block.fields_len.min(MAX_HEADER_BYTES)];
        let parsed = mail_parser::MessageParser::new().parse_headers(headers)?;
        parsed.date().map(|d| d.to_timestamp())
    }
}

/// Removes every field named in `names` (with its folded continuation lines) from the header
/// block of `message`; every other byte stays as it was. Borrows when nothing is removed.
///
/// ```
/// use mailjournal_envelope::item::remove_header_fields;
/// let m = b"A: 1\nX-Drop: 2\n  more\nB: 3\n\nX-Drop: body is untouched\n";
/// assert_eq!(&*remove_header_fields(m, &["x-drop"]), b"A: 1\nB: 3\n\nX-Drop: body is untouched\n");
/// ```
pub fn remove_header_fields<'m>(message: &'m [u8], names: &[&str]) -> Cow<'m, [u8]> {
    let block = header::header_block(message);
    let fields = &message[..block.fields_len];
    let mut doomed = header::fields(fields)
        .filter(|f| names.iter().any(|n| f.is(n)))
        .peekable();
    if doomed.peek().is_none() {
        return Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len());
    let mut kept_from = 0;
    for field in doomed {
        out.extend_from_slice(&message[kept_from..field.start]);
        kept_from = field.end;
    }
    out.extend_from_slice(&message[kept_from..]);
    Cow::Owned(out)
}

/// Why the report path failed, carried into the EML item.
struct Failure {
    reason: StepDown,
    version: Option<ReportVersion>,
    warnings: Vec<String>,
}

/// The report reader: one pass over the top-level headers, one boundary scan, small reads of
/// the envelope part and the original's header block.
struct Report;

impl Report {
    fn read(input: &[u8], depth: usize) -> Result<JournalItem<'_>, Failure> {
        let fail = |reason, version| Failure {
            reason,
            version,
            warnings: Vec::new(),
        };
        if input.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(fail(StepDown::EmptyInput, None));
        }
        let block: HeaderBlock = header::header_block(input);
        if block.fields_len > MAX_HEADER_BYTES {
            return Err(fail(StepDown::HeaderTooLarge, None));
        }
        let headers = &input[..block.fields_len];
        let version = detect_version(headers);
        let content_type =
            header::find(headers, "Content-Type").and_then(|f| ContentType::parse(f.value));

        let Some(version) = version else {
            // An NDR from the alternate journaling mailbox may carry a whole report.
            return match Self::unwrap_ndr(input, &block, content_type, depth) {
                Some(result) => result,
                None => Err(fail(StepDown::NoJournalHeader, None)),
            };
        };
        let Some(boundary) = content_type
            .filter(|c| c.is_multipart())
            .and_then(|c| c.param("boundary"))
        else {
            return Err(fail(StepDown::NotMultipart, Some(version)));
        };
        let multipart = split_multipart(
            input,
            block.body_start,
            input.len(),
            boundary,
            MAX_PARTS + 1,
        );
        if multipart.parts.len() > MAX_PARTS {
            return Err(fail(StepDown::TooManyParts, Some(version)));
        }
        let mut warnings = Vec::new();
        if !multipart.closed {
            warnings.push("report has no closing boundary: it may be truncated".to_owned());
        }

        // The envelope: the first text/plain child, or the text/plain inside a first
        // multipart/alternative child (Exchange 2003).
        let mut envelope_part = None;
        let mut originals: Vec<(Part, TransferEncoding)> = Vec::new();
        let mut other_attachment = None;
        for part in &multipart.parts {
            let part_headers = part.headers(input);
            let ct = header::find(part_headers, "Content-Type")
                .and_then(|f| ContentType::parse(f.value));
            let is_text_plain = ct.is_none_or(|c| c.is(b"text", b"plain"));
            if envelope_part.is_none() && originals.is_empty() && is_text_plain {
                envelope_part = Some((*part, ct));
                continue;
            }
            if let Some(c) = ct {
                if envelope_part.is_none() && c.is(b"multipart", b"alternative") {
                    if let Some(inner) = c.param("boundary").and_then(|b| {
                        split_multipart(input, part.body_start, part.end, b, MAX_PARTS)
                            .parts
                            .into_iter()
                            .find(|p| {
                                header::find(p.headers(input), "Content-Type")
                                    .and_then(|f| ContentType::parse(f.value))
                                    .is_none_or(|c| c.is(b"text", b"plain"))
                            })
                    }) {
                        let inner_ct = header::find(inner.headers(input), "Content-Type")
                            .and_then(|f| ContentType::parse(f.value));
                        envelope_part = Some((inner, inner_ct));
                    }
                    continue;
                }
                if c.is(b"message", b"rfc822") {
                    let cte = TransferEncoding::parse(
                        header::find(part_headers, "Content-Transfer-Encoding").map(|f| f.value),
                    );
                    originals.push((*part, cte));
                    continue;
                }
                if other_attachment.is_none() {
                    other_attachment = Some(classify_attachment(c, part_headers));
                }
            } else if other_attachment.is_none() {
                other_attachment = Some(StepDown::OriginalNotRfc822);
            }
        }

        let Some((envelope_part, envelope_ct)) = envelope_part else {
            return Err(fail(StepDown::NoEnvelopePart, Some(version)));
        };
        if envelope_part.end - envelope_part.body_start > MAX_ENVELOPE_BYTES {
            return Err(fail(StepDown::NoEnvelopePart, Some(version)));
        }
        let Some(&(original, original_encoding)) = originals.first() else {
            return Err(fail(
                other_attachment.unwrap_or(StepDown::NoOriginalPart),
                Some(version),
            ));
        };
        if originals.len() > 2 {
            warnings.push(format!(
                "{} message/rfc822 parts: only the first two are read",
                originals.len()
            ));
        }
        for (_, cte) in originals.iter().take(2) {
            if *cte != TransferEncoding::Identity {
                warnings.push("an attached message is transfer-encoded; RFC 2046 allows only 7bit, 8bit or binary".to_owned());
            }
        }

        // Decode and read the envelope.
        let envelope_headers = envelope_part.headers(input);
        let cte = TransferEncoding::parse(
            header::find(envelope_headers, "Content-Transfer-Encoding").map(|f| f.value),
        );
        let charset = envelope_ct.and_then(|c| c.param("charset"));
        let decoded = decode::decode_text(envelope_part.body(input), cte, charset);
        warnings.extend(decoded.warnings);
        let mut fields = match decoded.text {
            Cow::Borrowed(text) => envelope::parse(text),
            Cow::Owned(text) => envelope::parse(&text).into_owned(),
        };
        if fields.sender.is_none() {
            return Err(Failure {
                reason: StepDown::NoSender,
                version: Some(version),
                warnings,
            });
        }
        let version = if fields.exchange2003_list {
            ReportVersion::Exchange2003
        } else {
            version
        };
        warnings.append(&mut fields.warnings);

        // Cross-check the Message-ID of the original.
        // The attached message's own header block (not the MIME part's headers).
        let original_message = original.body(input);
        let original_headers = &original_message[..header::header_block(original_message)
            .fields_len
            .min(MAX_HEADER_BYTES)];
        let original_id = header::find(original_headers, "Message-ID").map(|f| bare_id(f.value));
        let parent_id =
            header::find(headers, "X-MS-Exchange-Parent-Message-Id").map(|f| bare_id(f.value));
        if original_encoding == TransferEncoding::Identity
            && let (Some(envelope_id), Some(original_id)) =
                (fields.message_id.as_deref(), original_id.as_deref())
            && envelope_id != original_id
        {
            warnings.push(format!(
                "envelope Message-Id <{envelope_id}> differs from the original's <{original_id}>"
            ));
        }
        if let (Some(parent), Some(envelope_id)) =
            (parent_id.as_deref(), fields.message_id.as_deref())
            && parent != envelope_id
        {
            warnings.push(format!("X-MS-Exchange-Parent-Message-Id <{parent}> differs from the envelope's <{envelope_id}>"));
        }
        if fields.message_id.is_none() {
            fields.message_id = original_id.map(Cow::Owned);
        }
        if fields.subject.is_none() {
            fields.subject = eml::fields(original_headers).subject;
        }

        let clear = originals.get(1).copied();
        Ok(JournalItem {
            input,
            format: Format::Envelope,
            step_down: None,
            report_version: Some(version),
            unwrapped_ndr: false,
            fields,
            original: Some(Span::of(&original)),
            original_encoding,
            clear_text: clear.map(|(p, _)| Span::of(&p)),
            clear_text_encoding: clear.map_or(TransferEncoding::Identity, |(_, e)| e),
            warnings,
            eml_sent_at: None,
        })
    }

    /// Unwraps one NDR level: a multipart whose direct `message/rfc822` child is a report.
    fn unwrap_ndr<'a>(
        input: &'a [u8],
        block: &HeaderBlock,
        content_type: Option<ContentType<'_>>,
        depth: usize,
    ) -> Option<Result<JournalItem<'a>, Failure>> {
        let ct = content_type.filter(|c| c.is(b"multipart", b"report"))?;
        let boundary = ct.param("boundary")?;
        let multipart = split_multipart(input, block.body_start, input.len(), boundary, MAX_PARTS);
        let inner = multipart.parts.iter().find(|p| {
            let h = p.headers(input);
            header::find(h, "Content-Type")
                .and_then(|f| ContentType::parse(f.value))
                .is_some_and(|c| c.is(b"message", b"rfc822"))
                && TransferEncoding::parse(
                    header::find(h, "Content-Transfer-Encoding").map(|f| f.value),
                ) == TransferEncoding::Identity
        })?;
        let inner_bytes = &input[inner.body_start..inner.end];
        let inner_block = header::header_block(inner_bytes);
        let inner_headers = &inner_bytes[..inner_block.fields_len.min(MAX_HEADER_BYTES)];
        let too_deep = || Failure {
            reason: StepDown::NestingTooDeep,
            version: None,
            warnings: Vec::new(),
        };
        if detect_version(inner_headers).is_some() {
            if depth >= 1 {
                return Some(Err(too_deep()));
            }
            let offset = inner.body_start;
            return Some(Self::read(inner_bytes, depth + 1).map(|item| JournalItem {
                input,
                unwrapped_ndr: true,
                original: item.original.map(|s| s.shifted(offset)),
                clear_text: item.clear_text.map(|s| s.shifted(offset)),
                ..item
            }));
        }
        // An NDR of an NDR of a report: say so rather than "not a report". Looks one level
        // further down, no more.
        if depth >= 1 {
            return None;
        }
        let inner_ct =
            header::find(inner_headers, "Content-Type").and_then(|f| ContentType::parse(f.value));
        Self::unwrap_ndr(inner_bytes, &inner_block, inner_ct, depth + 1).map(|_| Err(too_deep()))
    }
}

/// The report marker in a top-level header block, if any.
fn detect_version(headers: &[u8]) -> Option<ReportVersion> {
    let mut version = None;
    for field in header::fields(headers) {
        if field.is("X-MS-Journal-Report")
            || field.is("X-MS-Exchange-Organization-Journal-Report")
            || field.is("X-MS-Exchange-CrossPremises-Journal-Report")
        {
            return Some(ReportVersion::Exchange2007);
        }
        if (field.is("Content-Identifier") || field.is("Content-Identifer"))
            && header::trim(field.value).eq_ignore_ascii_case(b"ExJournalReport")
        {
            version = Some(ReportVersion::Exchange2003);
        }
    }
    version
}

fn classify_attachment(ct: ContentType<'_>, part_headers: &[u8]) -> StepDown {
    let tnef = ct.is(b"application", b"ms-tnef")
        || ct.is(b"application", b"vnd.ms-tnef")
        || ct.is(b"application", b"vnd.ms-outlook");
    let name = ct.param("name").or_else(|| {
        header::find(part_headers, "Content-Disposition")
            .and_then(|f| ContentType::parse_disposition_filename(f.value))
    });
    let msg_name = name.is_some_and(|n| {
        let n = n.to_ascii_lowercase();
        n.ends_with(b".msg") || n == b"winmail.dat"
    });
    if tnef || msg_name {
        StepDown::TnefOriginal
    } else {
        StepDown::OriginalNotRfc822
    }
}

/// A Message-ID without angle brackets or surrounding space, unfolded.
fn bare_id(value: &[u8]) -> String {
    let unfolded = header::unfold(value);
    let text = String::from_utf8_lossy(header::trim(&unfolded));
    text.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_owned()
}
