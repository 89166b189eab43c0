//! The session state machine.
//!
//! The host drives it like a `rustls` connection:
//!
//! 1. [`Session::new`] queues the greeting; write [`Session::take_output`] to the client.
//! 2. Feed received bytes with [`Session::feed`]; it returns how many it took (fewer than
//!    given only while a message awaits its commit: stop reading and feed the rest later).
//! 3. After each feed, write the output and handle every [`Event`] from
//!    [`Session::poll_event`]: stream [`Event::MessageData`] to the spool, and after
//!    [`Event::MessageComplete`] make the message durable, then call
//!    [`Session::committed`] (only now is `250` sent), [`Session::commit_failed`] or
//!    [`Session::storage_full`].
//! 4. On [`Event::StartTls`], flush the output, run the TLS handshake on the raw transport, and
//!    call [`Session::tls_established`]; plaintext the client pipelined after STARTTLS has
//!    already been discarded.
//! 5. Enforce [`Session::timeout`] with the host's clock; call [`Session::on_timeout`] when it
//!    expires. Close the transport after [`Event::Close`].

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use crate::admission::{Admission, JournalRules, RecipientKind};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::command::{self, Command, CommandError, MailParams};
use crate::data::DataReceiver;
use crate::reply::{EnhancedCode, Reply};

/// The longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;
/// The longest AUTH response line (base64 of a PLAIN response with 255-octet fields).
pub const MAX_AUTH_LINE: usize = 2048;

/// Limits and identity of the server side of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Name in the greeting and EHLO reply.
    pub hostname: String,
    /// `SIZE` advertised and enforced.
    pub max_message_size: u64,
    /// Most recipients per transaction (RFC 5321 requires at least 100).
    pub max_recipients: usize,
    /// Error replies before the session is closed with `421`.
    pub max_errors: u32,
    /// Unknown commands before the session is closed with `421`.
    pub max_unknown_commands: u32,
    /// Failed AUTH attempts before the session is closed with `421`.
    pub max_auth_failures: u32,
    /// Whether the host can run TLS (STARTTLS advertised).
    pub tls_available: bool,
    /// Reject DATA content holding a bare CR or LF with `550 5.5.2` (Postfix's `reject`).
    /// Off by default: an archive keeps what it received.
    pub reject_bare_line_endings: bool,
    /// Pipelined input held while a message awaits its commit.
    pub max_pending_input: usize,
    /// Reject DATA content with a line longer than this many octets, CRLF included, with
    /// `500 5.5.2` (RFC 5321 §4.5.3.1.6 sets 1000). `None` by default: an archive keeps what it
    /// received, and Exchange journals messages whose lines are longer.
    pub max_data_line_length: Option<usize>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            hostname: "localhost".to_owned(),
            max_message_size: 150 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            max_unknown_commands: 5,
            max_auth_failures: 3,
            tls_available: true,
            reject_bare_line_endings: false,
            max_pending_input: 64 * 1024,
            max_data_line_length: None,
        }
    }
}

/// The negotiated TLS parameters, as the host reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// e.g. `TLSv1.3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as the client wrote it.
    pub address: String,
    /// The journal definition, as [`Admission::recipient`] named it.
    pub journal: usize,
}

/// What the host stores with a message: the SMTP envelope and the session facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The client's address.
    pub peer: IpAddr,
    /// The HELO/EHLO name.
    pub helo: String,
    /// TLS parameters, when the session is secure.
    pub tls: Option<TlsInfo>,
    /// The authenticated identity (a service address), if any.
    pub authenticated: Option<String>,
    /// The reverse-path; `None` for `<>`.
    pub mail_from: Option<String>,
    /// MAIL parameters.
    pub params: MailParams,
    /// Accepted recipients.
    pub recipients: Vec<Recipient>,
    /// True when the content came with BDAT.
    pub chunked: bool,
}

/// Why a message in progress was dropped; the host discards what it spooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// Larger than the size limit (`552 5.3.4`).
    TooLarge,
    /// Bare CR or LF with [`SessionConfig::reject_bare_line_endings`] (`550 5.5.2`).
    BareLineEnding,
    /// A line longer than [`SessionConfig::max_data_line_length`] (`500 5.5.2`).
    LineTooLong,
    /// RSET or QUIT between BDAT chunks.
    Reset,
    /// The session timed out or was closed mid-message.
    ConnectionLost,
}

impl AbortReason {
    /// The reply code the session sent for it; `None` when no reply was sent (the client
    /// reset the transaction or went away).
    ///
    /// ```
    /// use mailjournal_smtp::AbortReason;
    /// assert_eq!(AbortReason::TooLarge.reply_code(), Some(552));
    /// assert_eq!(AbortReason::ConnectionLost.reply_code(), None);
    /// ```
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            AbortReason::TooLarge => Some(552),
            AbortReason::BareLineEnding => Some(550),
            AbortReason::LineTooLong => Some(500),
            AbortReason::Reset | AbortReason::ConnectionLost => None,
        }
    }
}

/// What the host must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Flush the output, then start TLS and call [`Session::tls_established`].
    StartTls,
    /// A message begins: open a spool file.
    MessageStart(Box<Transaction>),
    /// Message content, unstuffed, in order.
    MessageData(Vec<u8>),
    /// The message is complete: make it durable, then call [`Session::committed`] (or
    /// [`Session::commit_failed`] / [`Session::storage_full`]). No reply is sent before.
    MessageComplete {
        /// Total message size in octets.
        size: u64,
    },
    /// The message in progress is dropped.
    MessageAborted(AbortReason),
    /// An AUTH attempt failed; the host should slow this client down (e.g. wait `failures`
    /// seconds before writing the reply).
    AuthFailure {
        /// Failures so far in this session.
        failures: u32,
    },
    /// A command was refused, with the reply as sent: for the host's log (as Postfix logs
    /// each `reject:`), e.g. a recipient that is not a journal address or a client outside
    /// the definition's source ranges. Message-level refusals arrive as
    /// [`Event::MessageAborted`] instead.
    Rejected(Reply),
    /// Write the pending output, then close the connection.
    Close,
}

/// Which RFC 5321 §4.5.3.2 timeout applies now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Waiting for a command: 5 minutes.
    Command,
    /// Waiting for the next block of DATA or BDAT content: 3 minutes.
    DataBlock,
    /// Waiting for the client's TLS handshake: 1 minute.
    TlsHandshake,
}

impl Timeout {
    /// The duration.
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(match self {
            Timeout::Command => 300,
            Timeout::DataBlock => 180,
            Timeout::TlsHandshake => 60,
        })
    }
}

/// What the input loop does after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterLine {
    Continue,
    /// STARTTLS was accepted: the rest of the received input is dropped unread.
    DiscardInput,
}

#[derive(Debug)]
enum Phase {
    Command,
    AuthPlain,
    AuthLoginUser,
    AuthLoginPassword(String),
    Data(DataReceiver),
    Bdat {
        remaining: u64,
        last: bool,
        reject: Option<(Reply, bool)>,
    },
    AwaitingCommit,
    TlsHandshake,
    Closed,
}

#[derive(Debug)]
struct Mail {
    from: Option<String>,
    params: MailParams,
    recipients: Vec<Recipient>,
    /// BDAT chunks were used: DATA is refused.
    chunked: bool,
    /// Content octets received so far.
    size: u64,
    /// Content went over the limit: keep reading, discard, reply 552 at the end.
    oversize: bool,
    /// MessageStart was emitted.
    started: bool,
}

/// One SMTP server session.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    admission: Arc<dyn Admission>,
    peer: IpAddr,
    phase: Phase,
    helo: Option<String>,
    esmtp: bool,
    tls: Option<TlsInfo>,
    authenticated: Option<String>,
    mail: Option<Mail>,
    /// Partial command line, or pipelined input held while awaiting a commit.
    pending: Vec<u8>,
    /// The current line is over the limit: drop bytes until its end.
    overlong: bool,
    out: Vec<u8>,
    events: VecDeque<Event>,
    errors: u32,
    unknown: u32,
    auth_failures: u32,
    shutting_down: bool,
    storage_available: bool,
}

impl Session {
    /// A new session with a client at `peer`; the greeting is queued.
    pub fn new(config: Arc<SessionConfig>, admission: Arc<dyn Admission>, peer: IpAddr) -> Self {
        let mut session = Session {
            config,
            admission,
            peer,
            phase: Phase::Command,
            helo: None,
            esmtp: false,
            tls: None,
            authenticated: None,
            mail: None,
            pending: Vec::new(),
            overlong: false,
            out: Vec::new(),
            events: VecDeque::new(),
            errors: 0,
            unknown: 0,
            auth_failures: 0,
            shutting_down: false,
            storage_available: true,
        };
        let greeting = format!("{} ESMTP mailjournal", session.config.hostname);
        Reply::plain(220, vec![greeting]).write_to(&mut session.out);
        session
    }

    /// The bytes to write to the client now.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// True when output is waiting.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// True once the session is over (after `221`, `421` or a timeout).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// True while the channel is protected by TLS.
    pub fn is_secure(&self) -> bool {
        self.tls.is_some()
    }

    /// The timeout that applies now; `None` while the host is committing a message or the
    /// session is closed.
    pub fn timeout(&self) -> Option<Timeout> {
        match self.phase {
            Phase::Data(_) | Phase::Bdat { .. } => Some(Timeout::DataBlock),
            Phase::TlsHandshake => Some(Timeout::TlsHandshake),
            Phase::AwaitingCommit | Phase::Closed => None,
            _ => Some(Timeout::Command),
        }
    }

    /// The host's timer for [`timeout`](Self::timeout) expired.
    pub fn on_timeout(&mut self) {
        if self.is_closed() {
            return;
        }
        let host = self.config.hostname.clone();
        self.abort_message(AbortReason::ConnectionLost);
        self.close_with(Reply::new(
            421,
            EnhancedCode(4, 4, 2),
            format!("{host} Error: timeout exceeded"),
        ));
    }

    /// The host is shutting down: the next command gets `421 4.3.2` and the session closes.
    /// A message awaiting its commit is finished first.
    pub fn shutdown(&mut self) {
        self.shutting_down = true;
        if matches!(self.phase, Phase::Command) && self.pending.is_empty() {
            self.close_with(Reply::new(
                421,
                EnhancedCode(4, 3, 2),
                "Service shutting down, closing transmission channel",
            ));
        }
    }

    /// The host's storage can (or can no longer) take messages. While it cannot, MAIL gets
    /// `452 4.3.1` before any data is sent, and the client retries later.
    pub fn set_storage_available(&mut self, available: bool) {
        self.storage_available = available;
    }

    /// The transport dropped: any message in progress is aborted.
    pub fn on_disconnect(&mut self) {
        self.abort_message(AbortReason::ConnectionLost);
        self.phase = Phase::Closed;
    }

    /// TLS is up. The session returns to its initial state (RFC 3207 §4.2): the client must
    /// say EHLO again.
    pub fn tls_established(&mut self, info: TlsInfo) {
        if !matches!(self.phase, Phase::TlsHandshake) {
            return;
        }
        self.tls = Some(info);
        self.helo = None;
        self.esmtp = false;
        self.authenticated = None;
        self.mail = None;
        self.pending.clear();
        self.overlong = false;
        self.phase = Phase::Command;
    }

    /// The message is durable under `queue_id`: sends `250 2.0.0 Ok: queued as <ID>` and
    /// carries on with pipelined input.
    pub fn committed(&mut self, queue_id: &str) {
        self.finish_commit(Reply::new(
            250,
            EnhancedCode(2, 0, 0),
            format!("Ok: queued as {queue_id}"),
        ));
    }

    /// The message could not be made durable: `451 4.3.0`, the client will retry.
    pub fn commit_failed(&mut self) {
        self.finish_commit(Reply::new(
            451,
            EnhancedCode(4, 3, 0),
            "Error: queue file write error, try again later",
        ));
    }

    /// No space for the message: `452 4.3.1`.
    pub fn storage_full(&mut self) {
        self.finish_commit(Reply::new(
            452,
            EnhancedCode(4, 3, 1),
            "Insufficient system storage",
        ));
    }

    fn finish_commit(&mut self, reply: Reply) {
        if !matches!(self.phase, Phase::AwaitingCommit) {
            return;
        }
        self.mail = None;
        self.phase = Phase::Command;
        self.send(reply);
        let held = std::mem::take(&mut self.pending);
        if self.shutting_down && held.is_empty() {
            self.shutdown();
        }
        self.feed(&held);
    }

    /// Processes received bytes; returns how many were taken.
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let mut i = 0;
        while i < input.len() {
            let rest = &input[i..];
            match &mut self.phase {
                Phase::Closed | Phase::TlsHandshake => return input.len(),
                Phase::AwaitingCommit => {
                    let room = self
                        .config
                        .max_pending_input
                        .saturating_sub(self.pending.len());
                    let take = room.min(rest.len());
                    self.pending.extend_from_slice(&rest[..take]);
                    return i + take;
                }
                Phase::Data(rx) => {
                    let mut chunk = Vec::with_capacity(rest.len());
                    let (used, done) = rx.feed(rest, &mut chunk);
                    let bare = rx.saw_bare_line_ending();
                    let longest = rx.longest_line();
                    i += used;
                    self.message_data(chunk);
                    if done {
                        let reject_bare = bare && self.config.reject_bare_line_endings;
                        let too_long = self
                            .config
                            .max_data_line_length
                            .is_some_and(|max| longest > max);
                        self.end_of_message(reject_bare, too_long);
                    }
                }
                Phase::Bdat {
                    remaining,
                    last,
                    reject,
                } => {
                    let take = (*remaining).min(rest.len() as u64) as usize;
                    *remaining -= take as u64;
                    let (done, last, reject) = (*remaining == 0, *last, reject.clone());
                    i += take;
                    if reject.is_none() {
                        self.message_data(rest[..take].to_vec());
                    }
                    if done {
                        self.end_of_chunk(last, reject);
                    }
                }
                Phase::Command
                | Phase::AuthPlain
                | Phase::AuthLoginUser
                | Phase::AuthLoginPassword(_) => {
                    let limit = if matches!(self.phase, Phase::Command) {
                        MAX_COMMAND_LINE
                    } else {
                        MAX_AUTH_LINE
                    };
                    match memchr::memchr(b'\n', rest) {
                        None => {
                            self.buffer_partial_line(rest, limit);
                            return input.len();
                        }
                        Some(nl) => {
                            i += nl + 1;
                            let line_end = &rest[..=nl];
                            if self.overlong || self.pending.len() + line_end.len() > limit {
                                self.pending.clear();
                                self.overlong = false;
                                self.error(Reply::new(
                                    500,
                                    EnhancedCode(5, 5, 2),
                                    "Error: line too long",
                                ));
                                continue;
                            }
                            let line: Vec<u8>;
                            let line_ref: &[u8] = if self.pending.is_empty() {
                                line_end
                            } else {
                                self.pending.extend_from_slice(line_end);
                                line = std::mem::take(&mut self.pending);
                                &line
                            };
                            // A command line ends in CRLF and holds no other CR or LF.
                            let body = &line_ref[..line_ref.len() - 1];
                            let Some(body) =
                                body.strip_suffix(b"\r").filter(|b| !b.contains(&b'\r'))
                            else {
                                self.error(Reply::new(
                                    500,
                                    EnhancedCode(5, 5, 2),
                                    "Error: bare CR or LF received",
                                ));
                                continue;
                            };
                            let body = body.to_vec();
                            if self.line(&body) == AfterLine::DiscardInput {
                                // STARTTLS: everything after its line is plaintext injection.
                                return input.len();
                            }
                        }
                    }
                }
            }
        }
        input.len()
    }

    fn buffer_partial_line(&mut self, bytes: &[u8], limit: usize) {
        if self.overlong {
            return;
        }
        if self.pending.len() + bytes.len() > limit {
            self.pending.clear();
            self.overlong = true;
        } else {
            self.pending.extend_from_slice(bytes);
        }
    }

    /// Handles one complete line.
    fn line(&mut self, line: &[u8]) -> AfterLine {
        match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::AuthPlain => self.auth_plain_response(line),
            Phase::AuthLoginUser => {
                if let Some(user) = self.auth_decode(line) {
                    self.phase =
                        Phase::AuthLoginPassword(String::from_utf8_lossy(&user).into_owned());
                    self.out.extend_from_slice(b"334 UGFzc3dvcmQ6\r\n");
                }
            }
            Phase::AuthLoginPassword(user) => {
                if let Some(password) = self.auth_decode(line) {
                    self.check_credentials(&user, &password);
                }
            }
            _ => return self.command(line),
        }
        AfterLine::Continue
    }

    fn command(&mut self, line: &[u8]) -> AfterLine {
        if self.shutting_down {
            self.close_with(Reply::new(
                421,
                EnhancedCode(4, 3, 2),
                "Service shutting down, closing transmission channel",
            ));
            return AfterLine::Continue;
        }
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(e) => {
                self.command_error(e);
                return AfterLine::Continue;
            }
        };
        match command {
            Command::Ehlo(domain) | Command::Helo(domain) => {
                let ehlo = matches!(command, Command::Ehlo(_));
                self.abort_message(AbortReason::Reset);
                self.mail = None;
                self.helo = Some(domain.to_owned());
                self.esmtp = ehlo;
                if ehlo {
                    let reply = Reply::plain(250, self.ehlo_lines(domain));
                    self.send(reply);
                } else {
                    let reply = Reply::plain(250, vec![self.config.hostname.clone()]);
                    self.send(reply);
                }
            }
            Command::StartTls => {
                if self.tls.is_some() {
                    self.error(Reply::new(
                        503,
                        EnhancedCode(5, 5, 1),
                        "Error: TLS already active",
                    ));
                } else if !self.config.tls_available {
                    self.error(Reply::new(454, EnhancedCode(4, 7, 0), "TLS not available"));
                } else if self.mail.is_some() {
                    self.error(Reply::new(
                        503,
                        EnhancedCode(5, 5, 1),
                        "Error: STARTTLS inside a mail transaction",
                    ));
                } else {
                    self.send(Reply::new(220, EnhancedCode(2, 0, 0), "Ready to start TLS"));
                    self.pending.clear();
                    self.phase = Phase::TlsHandshake;
                    self.events.push_back(Event::StartTls);
                    return AfterLine::DiscardInput;
                }
            }
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to } => self.rcpt(to),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.abort_message(AbortReason::Reset);
                self.mail = None;
                self.send(Reply::new(250, EnhancedCode(2, 0, 0), "Ok"));
            }
            Command::Noop => self.send(Reply::new(250, EnhancedCode(2, 0, 0), "Ok")),
            Command::Vrfy => self.send(Reply::new(
                252,
                EnhancedCode(2, 5, 2),
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Help => self.send(Reply::new(
                214,
                EnhancedCode(2, 0, 0),
                "See RFC 5321; this server accepts journal reports for its journal addresses",
            )),
            Command::Quit => {
                self.abort_message(AbortReason::Reset);
                self.close_with(Reply::new(221, EnhancedCode(2, 0, 0), "Bye"));
            }
            Command::NotImplemented => self.error(Reply::new(
                502,
                EnhancedCode(5, 5, 1),
                "Error: command not implemented",
            )),
        }
        AfterLine::Continue
    }

    fn ehlo_lines(&self, client: &str) -> Vec<String> {
        let mut lines = vec![
            format!("{} Hello {client}", self.config.hostname),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "CHUNKING".to_owned(),
        ];
        if self.tls.is_none() && self.config.tls_available {
            lines.push("STARTTLS".to_owned());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        lines
    }

    /// AUTH is offered only over TLS, and only when some enabled definition uses it.
    fn auth_offered(&self) -> bool {
        self.tls.is_some() && self.enabled_journals().any(|r| r.use_smtp_authentication)
    }

    fn auth(&mut self, mechanism: &str, initial: Option<&str>) {
        if self.tls.is_none() {
            return self.error(Reply::new(
                538,
                EnhancedCode(5, 7, 11),
                "Encryption required for requested authentication mechanism",
            ));
        }
        if !self.auth_offered() {
            return self.error(Reply::new(
                502,
                EnhancedCode(5, 5, 1),
                "Error: authentication not enabled",
            ));
        }
        if self.helo.is_none() {
            return self.error(Reply::new(
                503,
                EnhancedCode(5, 5, 1),
                "Error: send EHLO first",
            ));
        }
        if self.authenticated.is_some() {
            return self.error(Reply::new(
                503,
                EnhancedCode(5, 5, 1),
                "Error: already authenticated",
            ));
        }
        if self.mail.is_some() {
            return self.error(Reply::new(
                503,
                EnhancedCode(5, 5, 1),
                "Error: AUTH not allowed in a mail transaction",
            ));
        }
        if mechanism.eq_ignore_ascii_case("PLAIN") {
            match initial {
                Some(response) => self.auth_plain_response(response.as_bytes()),
                None => {
                    self.phase = Phase::AuthPlain;
                    self.out.extend_from_slice(b"334 \r\n");
                }
            }
        } else if mechanism.eq_ignore_ascii_case("LOGIN") {
            match initial {
                Some(user) => {
                    if let Some(user) = self.auth_decode(user.as_bytes()) {
                        self.phase =
                            Phase::AuthLoginPassword(String::from_utf8_lossy(&user).into_owned());
                        self.out.extend_from_slice(b"334 UGFzc3dvcmQ6\r\n");
                    }
                }
                None => {
                    self.phase = Phase::AuthLoginUser;
                    self.out.extend_from_slice(b"334 VXNlcm5hbWU6\r\n");
                }
            }
        } else {
            self.error(Reply::new(
                504,
                EnhancedCode(5, 5, 4),
                "Error: unsupported authentication mechanism",
            ));
        }
    }

    /// Decodes one base64 AUTH response; `*` cancels. Replies on error.
    fn auth_decode(&mut self, line: &[u8]) -> Option<Vec<u8>> {
        if line == b"*" {
            self.error(Reply::new(
                501,
                EnhancedCode(5, 0, 0),
                "Authentication cancelled",
            ));
            return None;
        }
        if line == b"=" {
            return Some(Vec::new());
        }
        match BASE64.decode(line) {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                self.error(Reply::new(
                    501,
                    EnhancedCode(5, 5, 2),
                    "Error: invalid base64 in authentication response",
                ));
                None
            }
        }
    }

    fn auth_plain_response(&mut self, line: &[u8]) {
        let Some(decoded) = self.auth_decode(line) else {
            return;
        };
        let mut fields = decoded.split(|b| *b == 0);
        let (Some(authz), Some(user), Some(password), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return self.error(Reply::new(
                501,
                EnhancedCode(5, 5, 2),
                "Error: malformed PLAIN response",
            ));
        };
        if !authz.is_empty() && authz != user {
            return self.auth_failed();
        }
        let user = String::from_utf8_lossy(user).into_owned();
        self.check_credentials(&user, password);
    }

    fn check_credentials(&mut self, user: &str, password: &[u8]) {
        match self.admission.authenticate(user, password) {
            Some(identity) => {
                self.authenticated = Some(identity);
                self.send(Reply::new(
                    235,
                    EnhancedCode(2, 7, 0),
                    "Authentication successful",
                ));
            }
            None => self.auth_failed(),
        }
    }

    fn auth_failed(&mut self) {
        self.auth_failures += 1;
        self.events.push_back(Event::AuthFailure {
            failures: self.auth_failures,
        });
        if self.auth_failures >= self.config.max_auth_failures {
            self.close_with(Reply::new(
                421,
                EnhancedCode(4, 7, 0),
                "Error: too many authentication failures",
            ));
        } else {
            self.error(Reply::new(
                535,
                EnhancedCode(5, 7, 8),
                "Error: authentication credentials invalid",
            ));
        }
    }

    fn enabled_journals(&self) -> impl Iterator<Item = JournalRules<'_>> {
        self.admission
            .journals()
            .filter_map(|j| self.admission.rules(j))
            .filter(|r| !r.disabled)
    }

    fn mail(&mut self, from: Option<&str>, params: MailParams) {
        if self.helo.is_none() {
            return self.error(Reply::new(
                503,
                EnhancedCode(5, 5, 1),
                "Error: send HELO/EHLO first",
            ));
        }
        if self.mail.is_some() {
            return self.error(Reply::new(
                503,
                EnhancedCode(5, 5, 1),
                "Error: nested MAIL command",
            ));
        }
        let any_enabled = self.enabled_journals().next().is_some();
        let all_encrypted = any_enabled && self.enabled_journals().all(|r| r.encrypted);
        let all_auth = any_enabled && self.enabled_journals().all(|r| r.use_smtp_authentication);
        if !self.storage_available {
            return self.error(Reply::new(
                452,
                EnhancedCode(4, 3, 1),
                "Insufficient system storage",
            ));
        }
        if all_encrypted && self.tls.is_none() {
            return self.error(Reply::new(
                530,
                EnhancedCode(5, 7, 0),
                "Must issue a STARTTLS command first",
            ));
        }
        if all_auth && self.authenticated.is_none() {
            return self.error(Reply::new(
                530,
                EnhancedCode(5, 7, 0),
                "Authentication required",
            ));
        }
        if !self.esmtp && (params.size.is_some() || params.eight_bit || params.smtputf8) {
            return self.error(Reply::new(
                555,
                EnhancedCode(5, 5, 4),
                "Error: parameters need EHLO",
            ));
        }
        if params
            .size
            .is_some_and(|s| s > self.config.max_message_size)
        {
            return self.error(Reply::new(
                552,
                EnhancedCode(5, 3, 4),
                "Error: message size exceeds fixed limit",
            ));
        }
        if from.is_some_and(|f| !f.is_ascii()) && !params.smtputf8 {
            return self.error(Reply::new(
                553,
                EnhancedCode(5, 6, 7),
                "Error: non-ASCII address needs SMTPUTF8",
            ));
        }
        self.mail = Some(Mail {
            from: from.map(str::to_owned),
            params,
            recipients: Vec::new(),
            chunked: false,
            size: 0,
            oversize: false,
            started: false,
        });
        self.send(Reply::new(250, EnhancedCode(2, 1, 0), "Ok"));
    }

    fn rcpt(&mut self, to: &str) {
        let Some(mail) = &self.mail else {
            return self.error(Reply::new(
                503,
                EnhancedCode(5, 5, 1),
                "Error: need MAIL command",
            ));
        };
        if !to.is_ascii() && !mail.params.smtputf8 {
            return self.error(Reply::new(
                553,
                EnhancedCode(5, 6, 7),
                "Error: non-ASCII address needs SMTPUTF8",
            ));
        }
        if mail.recipients.len() >= self.config.max_recipients {
            return self.error(Reply::new(
                452,
                EnhancedCode(4, 5, 3),
                "Error: too many recipients",
            ));
        }
        let index = match self.admission.recipient(to) {
            RecipientKind::Journal(index) => index,
            RecipientKind::LocalUnknown => {
                return self.error(Reply::new(
                    550,
                    EnhancedCode(5, 1, 1),
                    format!("<{to}>: Recipient address rejected: not a journal address"),
                ));
            }
            RecipientKind::Relay => {
                return self.error(Reply::new(
                    550,
                    EnhancedCode(5, 7, 1),
                    format!("<{to}>: Relay access denied"),
                ));
            }
        };
        let Some(d) = self.admission.rules(index) else {
            return self.error(Reply::new(
                550,
                EnhancedCode(5, 1, 1),
                format!("<{to}>: Recipient address rejected: not a journal address"),
            ));
        };
        if d.disabled {
            return self.error(Reply::new(
                550,
                EnhancedCode(5, 1, 1),
                format!("<{to}>: Recipient address rejected: journal definition disabled"),
            ));
        }
        if d.encrypted && self.tls.is_none() {
            return self.error(Reply::new(
                530,
                EnhancedCode(5, 7, 0),
                "Must issue a STARTTLS command first",
            ));
        }
        // A definition that uses SMTP authentication is authorised by its credentials (the
        // service address and password); any other by the sender's address.
        if d.use_smtp_authentication {
            if self.authenticated.as_deref() != Some(d.service_address) {
                return self.error(Reply::new(
                    530,
                    EnhancedCode(5, 7, 0),
                    "Authentication required",
                ));
            }
        } else if !self.admission.source_allowed(index, self.peer) {
            let peer = self.peer;
            return self.error(Reply::new(550, EnhancedCode(5, 7, 1), format!("<{to}>: Client address {peer} is not an authorized source for this journal address")));
        }
        // One journal definition per transaction: each accepted message becomes one journal
        // item under one definition's options. 452 makes the client send the rest again.
        if self
            .mail
            .as_ref()
            .and_then(|m| m.recipients.first())
            .is_some_and(|first| first.journal != index)
        {
            return self.error(Reply::new(
                452,
                EnhancedCode(4, 5, 3),
                "Error: one journal address per transaction, send the others separately",
            ));
        }
        if let Some(mail) = &mut self.mail {
            mail.recipients.push(Recipient {
                address: to.to_owned(),
                journal: index,
            });
        }
        self.send(Reply::new(250, EnhancedCode(2, 1, 5), "Ok"));
    }

    fn data(&mut self) {
        let Some(mail) = &self.mail else {
            return self.error(Reply::new(
                503,
                EnhancedCode(5, 5, 1),
                "Error: need MAIL command",
            ));
        };
        if mail.chunked {
            return self.error(Reply::new(
                503,
                EnhancedCode(5, 5, 1),
                "Error: DATA after BDAT in the same transaction",
            ));
        }
        if mail.recipients.is_empty() {
            return self.error(Reply::new(
                554,
                EnhancedCode(5, 5, 1),
                "Error: no valid recipients",
            ));
        }
        self.start_message(false);
        self.send(Reply::new(
            354,
            EnhancedCode(2, 0, 0),
            "End data with <CR><LF>.<CR><LF>",
        ));
        self.phase = Phase::Data(
            DataReceiver::new()
                .detect_bare_line_endings(self.config.reject_bare_line_endings)
                .measure_lines(self.config.max_data_line_length.is_some()),
        );
    }

    fn bdat(&mut self, size: u64, last: bool) {
        // A chunk that cannot be refused by discarding it keeps the connection out of sync.
        if size > self.config.max_message_size {
            self.abort_message(AbortReason::TooLarge);
            self.mail = None;
            return self.close_with(Reply::new(
                552,
                EnhancedCode(5, 3, 4),
                "Error: chunk exceeds message size limit",
            ));
        }
        let reject = match &self.mail {
            None => Some((
                Reply::new(503, EnhancedCode(5, 5, 1), "Error: need MAIL command"),
                false,
            )),
            Some(m) if m.recipients.is_empty() => Some((
                Reply::new(554, EnhancedCode(5, 5, 1), "Error: no valid recipients"),
                false,
            )),
            Some(m) if m.size.saturating_add(size) > self.config.max_message_size || m.oversize => {
                Some((
                    Reply::new(
                        552,
                        EnhancedCode(5, 3, 4),
                        "Error: message size exceeds fixed limit",
                    ),
                    true,
                ))
            }
            Some(_) => None,
        };
        if reject.is_none() {
            if let Some(mail) = &mut self.mail {
                mail.chunked = true;
            }
            self.start_message(true);
        }
        self.phase = Phase::Bdat {
            remaining: size,
            last,
            reject,
        };
        if size == 0 {
            let Phase::Bdat { last, reject, .. } =
                std::mem::replace(&mut self.phase, Phase::Command)
            else {
                return;
            };
            self.end_of_chunk(last, reject);
        }
    }

    fn end_of_chunk(&mut self, last: bool, reject: Option<(Reply, bool)>) {
        self.phase = Phase::Command;
        match reject {
            Some((reply, ends_transaction)) => {
                if ends_transaction {
                    self.abort_message(AbortReason::TooLarge);
                    self.mail = None;
                }
                self.error(reply);
            }
            None if last => self.end_of_message(false, false),
            None => {
                let size = self.mail.as_ref().map_or(0, |m| m.size);
                self.send(Reply::new(
                    250,
                    EnhancedCode(2, 0, 0),
                    format!("{size} octets received"),
                ));
            }
        }
    }

    fn start_message(&mut self, chunked: bool) {
        let Some(mail) = &mut self.mail else { return };
        if mail.started {
            return;
        }
        mail.started = true;
        let transaction = Transaction {
            peer: self.peer,
            helo: self.helo.clone().unwrap_or_default(),
            tls: self.tls.clone(),
            authenticated: self.authenticated.clone(),
            mail_from: mail.from.clone(),
            params: mail.params,
            recipients: mail.recipients.clone(),
            chunked,
        };
        self.events
            .push_back(Event::MessageStart(Box::new(transaction)));
    }

    fn message_data(&mut self, chunk: Vec<u8>) {
        let Some(mail) = &mut self.mail else { return };
        if chunk.is_empty() || mail.oversize {
            return;
        }
        mail.size += chunk.len() as u64;
        if mail.size > self.config.max_message_size {
            mail.oversize = true;
            self.events
                .push_back(Event::MessageAborted(AbortReason::TooLarge));
            return;
        }
        self.events.push_back(Event::MessageData(chunk));
    }

    fn end_of_message(&mut self, reject_bare: bool, line_too_long: bool) {
        let Some(mail) = &self.mail else {
            self.phase = Phase::Command;
            return;
        };
        // The message is refused at its end: (the abort to report, unless already reported
        // when the size limit was crossed; the reply).
        let refusal = if mail.oversize {
            Some((
                None,
                Reply::new(
                    552,
                    EnhancedCode(5, 3, 4),
                    "Error: message size exceeds fixed limit",
                ),
            ))
        } else if line_too_long {
            Some((
                Some(AbortReason::LineTooLong),
                Reply::new(
                    500,
                    EnhancedCode(5, 5, 2),
                    "Error: text line too long in message content",
                ),
            ))
        } else if reject_bare {
            Some((
                Some(AbortReason::BareLineEnding),
                Reply::new(
                    550,
                    EnhancedCode(5, 5, 2),
                    "Error: bare CR or LF received in message content",
                ),
            ))
        } else {
            None
        };
        if let Some((abort, reply)) = refusal {
            self.mail = None;
            self.phase = Phase::Command;
            if let Some(reason) = abort {
                self.events.push_back(Event::MessageAborted(reason));
            }
            return self.error(reply);
        }
        let size = mail.size;
        self.phase = Phase::AwaitingCommit;
        self.events.push_back(Event::MessageComplete { size });
    }

    /// Drops a message in progress (content already streamed) and tells the host.
    fn abort_message(&mut self, reason: AbortReason) {
        if let Some(mail) = &self.mail
            && mail.started
            && !mail.oversize
            && !matches!(self.phase, Phase::AwaitingCommit)
        {
            self.events.push_back(Event::MessageAborted(reason));
        }
        if matches!(self.phase, Phase::Data(_) | Phase::Bdat { .. }) {
            self.mail = None;
        }
    }

    fn command_error(&mut self, error: CommandError) {
        let reply = match error {
            CommandError::Unknown => {
                self.unknown += 1;
                if self.unknown >= self.config.max_unknown_commands {
                    return self.close_with(Reply::new(
                        421,
                        EnhancedCode(4, 7, 0),
                        "Error: too many unknown commands",
                    ));
                }
                Reply::new(500, EnhancedCode(5, 5, 2), "Error: command not recognized")
            }
            CommandError::Syntax(text) => Reply::new(501, EnhancedCode(5, 5, 4), text),
            CommandError::BadAddress(text) => Reply::new(
                501,
                EnhancedCode(5, 1, 3),
                format!("Error: bad address syntax: {text}"),
            ),
            CommandError::PathTooLong => {
                Reply::new(501, EnhancedCode(5, 5, 4), "Error: address too long")
            }
            CommandError::UnsupportedParameter => {
                Reply::new(555, EnhancedCode(5, 5, 4), "Error: unsupported parameter")
            }
            CommandError::BadChunkSize => {
                // The chunk length is unknown: the stream cannot be resynchronised.
                self.abort_message(AbortReason::Reset);
                self.mail = None;
                return self.close_with(Reply::new(
                    501,
                    EnhancedCode(5, 5, 4),
                    "Syntax: BDAT size [LAST]; closing connection",
                ));
            }
        };
        self.error(reply);
    }

    fn send(&mut self, reply: Reply) {
        reply.write_to(&mut self.out);
    }

    /// Sends an error reply and closes the session once the error limit is reached.
    fn error(&mut self, reply: Reply) {
        self.events.push_back(Event::Rejected(reply.clone()));
        self.send(reply);
        self.errors += 1;
        if self.errors >= self.config.max_errors && !self.is_closed() {
            self.close_with(Reply::new(
                421,
                EnhancedCode(4, 7, 0),
                "Error: too many errors",
            ));
        }
    }

    fn close_with(&mut self, reply: Reply) {
        self.send(reply);
        self.phase = Phase::Closed;
        self.pending.clear();
        self.events.push_back(Event::Close);
    }
}
