//! SMTP command lines (RFC 5321 §4.1, RFC 1870, RFC 3030, RFC 3207, RFC 4954, RFC 6152,
//! RFC 6531), parsed from one line without its CRLF. Borrows from the line.

use mailjournal_definition::address::{MAX_DOMAIN, MAX_LOCAL_PART};

/// The longest path, angle brackets included (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH: usize = 256;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `EHLO domain`.
    Ehlo(&'a str),
    /// `HELO domain`.
    Helo(&'a str),
    /// `MAIL FROM:<path> [params]`; `None` is the null reverse-path `<>`.
    Mail {
        /// The reverse-path's address.
        from: Option<&'a str>,
        /// ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path> [params]`.
    Rcpt {
        /// The forward-path's address.
        to: &'a str,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]`.
    Bdat {
        /// The chunk size in octets.
        size: u64,
        /// True for the last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY string`.
    Vrfy,
    /// `HELP [string]`.
    Help,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH mechanism [initial-response]`.
    Auth {
        /// The mechanism name, uppercased by the caller's comparison.
        mechanism: &'a str,
        /// The initial response, base64 (or `=` for empty).
        initial: Option<&'a str>,
    },
    /// A command this server knows of but does not implement (`EXPN`, `TURN`, `ETRN`, …).
    NotImplemented,
}

/// The ESMTP parameters of MAIL FROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=n`.
    pub size: Option<u64>,
    /// `BODY=8BITMIME` (true) or `BODY=7BIT`/absent (false).
    pub eight_bit: bool,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
}

/// Why a command line was refused; each maps to one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// Not a command at all: `500 5.5.2`.
    Unknown,
    /// Wrong syntax for the command's arguments: `501 5.5.4`.
    Syntax(&'static str),
    /// A bad mailbox in a path: `501 5.1.3` (or `553 5.1.3`).
    BadAddress(&'static str),
    /// A path longer than the RFC limits: `501 5.5.4`.
    PathTooLong,
    /// A MAIL parameter that is not supported: `555 5.5.4`.
    UnsupportedParameter,
    /// A BDAT size that is missing or not a number: `501 5.5.4`, and the stream is out of sync.
    BadChunkSize,
}

/// Parses one command line (without CRLF).
///
/// ```
/// use mailjournal_smtp::command::{parse, Command};
/// assert_eq!(parse(b"MAIL FROM:<>").unwrap(), Command::Mail { from: None, params: Default::default() });
/// assert_eq!(parse(b"rcpt to:<Journaling@Journal.Contoso.com>").unwrap(), Command::Rcpt { to: "Journaling@Journal.Contoso.com" });
/// assert_eq!(parse(b"BDAT 0 LAST").unwrap(), Command::Bdat { size: 0, last: true });
/// ```
pub fn parse(line: &[u8]) -> Result<Command<'_>, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::Unknown)?;
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let is = |name: &str| verb.eq_ignore_ascii_case(name);
    if is("EHLO") || is("HELO") {
        let domain = rest.trim();
        if domain.len() > MAX_DOMAIN + 2 {
            // A domain or address literal has at most 255 octets (RFC 5321 §4.5.3.1.2).
            return Err(CommandError::Syntax("Error: hostname too long"));
        }
        if domain.is_empty() || domain.contains(' ') {
            return Err(CommandError::Syntax(if is("EHLO") {
                "Syntax: EHLO hostname"
            } else {
                "Syntax: HELO hostname"
            }));
        }
        return Ok(if is("EHLO") {
            Command::Ehlo(domain)
        } else {
            Command::Helo(domain)
        });
    }
    if is("MAIL") {
        let rest = strip_prefix_ci(rest, "FROM:")
            .ok_or(CommandError::Syntax("Syntax: MAIL FROM:<address>"))?;
        let (path, params) = split_path(rest)?;
        let from = mailbox(path, true)?;
        return Ok(Command::Mail {
            from,
            params: mail_params(params)?,
        });
    }
    if is("RCPT") {
        let rest = strip_prefix_ci(rest, "TO:")
            .ok_or(CommandError::Syntax("Syntax: RCPT TO:<address>"))?;
        let (path, params) = split_path(rest)?;
        if !params.trim().is_empty() {
            return Err(CommandError::UnsupportedParameter);
        }
        let to = mailbox(path, false)?.ok_or(CommandError::BadAddress("empty forward-path"))?;
        return Ok(Command::Rcpt { to });
    }
    if is("BDAT") {
        let mut words = rest.split(' ').filter(|w| !w.is_empty());
        let size = words
            .next()
            .filter(|w| w.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|w| w.parse::<u64>().ok());
        let size = size.ok_or(CommandError::BadChunkSize)?;
        let last = match words.next() {
            None => false,
            Some(w) if w.eq_ignore_ascii_case("LAST") => true,
            Some(_) => return Err(CommandError::BadChunkSize),
        };
        if words.next().is_some() {
            return Err(CommandError::BadChunkSize);
        }
        return Ok(Command::Bdat { size, last });
    }
    if is("AUTH") {
        let mut words = rest.split(' ').filter(|w| !w.is_empty());
        let mechanism = words.next().ok_or(CommandError::Syntax(
            "Syntax: AUTH mechanism [initial-response]",
        ))?;
        let initial = words.next();
        if words.next().is_some() {
            return Err(CommandError::Syntax(
                "Syntax: AUTH mechanism [initial-response]",
            ));
        }
        return Ok(Command::Auth { mechanism, initial });
    }
    let no_args = |cmd: Command<'static>| {
        if rest.trim().is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax("no arguments allowed"))
        }
    };
    if is("DATA") {
        return no_args(Command::Data);
    }
    if is("RSET") {
        return no_args(Command::Rset);
    }
    if is("QUIT") {
        return no_args(Command::Quit);
    }
    if is("STARTTLS") {
        return no_args(Command::StartTls);
    }
    if is("NOOP") {
        return Ok(Command::Noop);
    }
    if is("VRFY") {
        return Ok(Command::Vrfy);
    }
    if is("HELP") {
        return Ok(Command::Help);
    }
    if is("EXPN")
        || is("TURN")
        || is("ETRN")
        || is("ATRN")
        || is("SEND")
        || is("SOML")
        || is("SAML")
        || is("VERB")
    {
        return Ok(Command::NotImplemented);
    }
    Err(CommandError::Unknown)
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Splits `<path> params` (tolerating one space before `<`, as many clients send).
fn split_path(rest: &str) -> Result<(&str, &str), CommandError> {
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    if !rest.starts_with('<') {
        return Err(CommandError::Syntax(
            "Syntax: the address must be enclosed in <>",
        ));
    }
    let close = rest
        .find('>')
        .ok_or(CommandError::Syntax("Syntax: missing '>'"))?;
    if close + 1 > MAX_PATH {
        return Err(CommandError::PathTooLong);
    }
    let params = &rest[close + 1..];
    if !params.is_empty() && !params.starts_with(' ') {
        return Err(CommandError::Syntax(
            "Syntax: space required after the path",
        ));
    }
    Ok((&rest[1..close], params))
}

/// The mailbox of a path: `local@domain`, without a source route (`@a,@b:`, ignored per
/// RFC 5321 §4.1.2). `None` for the null path when allowed.
fn mailbox(path: &str, allow_null: bool) -> Result<Option<&str>, CommandError> {
    if path.is_empty() {
        return if allow_null {
            Ok(None)
        } else {
            Err(CommandError::BadAddress("empty address"))
        };
    }
    let path = match path.strip_prefix('@') {
        Some(_) => path
            .split_once(':')
            .map(|(_, m)| m)
            .ok_or(CommandError::BadAddress("bad source route"))?,
        None => path,
    };
    let at = path
        .rfind('@')
        .ok_or(CommandError::BadAddress("address without a domain"))?;
    let (local, domain) = (&path[..at], &path[at + 1..]);
    if local.is_empty() || domain.is_empty() {
        return Err(CommandError::BadAddress("empty local part or domain"));
    }
    if local.len() > MAX_LOCAL_PART || domain.len() > MAX_DOMAIN {
        return Err(CommandError::PathTooLong);
    }
    if path
        .chars()
        .any(|c| c.is_control() || c == ' ' || c == '<' || c == '>')
    {
        return Err(CommandError::BadAddress("invalid character in address"));
    }
    Ok(Some(path))
}

fn mail_params(text: &str) -> Result<MailParams, CommandError> {
    let mut params = MailParams::default();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        let key_is = |name: &str| key.eq_ignore_ascii_case(name);
        match value {
            Some(v) if key_is("SIZE") => {
                params.size = Some(
                    v.parse()
                        .map_err(|_| CommandError::Syntax("Syntax: SIZE=number"))?,
                );
            }
            Some(v) if key_is("BODY") => {
                params.eight_bit = if v.eq_ignore_ascii_case("8BITMIME") {
                    true
                } else if v.eq_ignore_ascii_case("7BIT") {
                    false
                } else {
                    return Err(CommandError::UnsupportedParameter);
                };
            }
            // RFC 4954 §5: AUTH=<> or a mailbox; accepted and ignored (no relaying here).
            Some(_) if key_is("AUTH") => {}
            None if key_is("SMTPUTF8") => params.smtputf8 = true,
            _ => return Err(CommandError::UnsupportedParameter),
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_case_insensitive_and_arguments_checked() {
        assert_eq!(
            parse(b"ehlo mx.example.com"),
            Ok(Command::Ehlo("mx.example.com"))
        );
        assert_eq!(
            parse(b"HELO"),
            Err(CommandError::Syntax("Syntax: HELO hostname"))
        );
        assert_eq!(
            parse(b"DATA x"),
            Err(CommandError::Syntax("no arguments allowed"))
        );
        assert_eq!(parse(b"XYZZY"), Err(CommandError::Unknown));
        assert_eq!(parse(b"EXPN list"), Ok(Command::NotImplemented));
        assert_eq!(
            parse(b"AUTH PLAIN AGFAYg=="),
            Ok(Command::Auth {
                mechanism: "PLAIN",
                initial: Some("AGFAYg==")
            })
        );
    }

    #[test]
    fn mail_parameters() {
        let Command::Mail { from, params } =
            parse(b"MAIL FROM:<a@b.c> SIZE=1000 BODY=8BITMIME SMTPUTF8 AUTH=<>").unwrap()
        else {
            panic!()
        };
        assert_eq!(from, Some("a@b.c"));
        assert_eq!(
            params,
            MailParams {
                size: Some(1000),
                eight_bit: true,
                smtputf8: true
            }
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@b.c> BODY=BINARYMIME"),
            Err(CommandError::UnsupportedParameter)
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@b.c> RET=FULL"),
            Err(CommandError::UnsupportedParameter)
        );
        assert_eq!(parse(b"MAIL FROM: <a@b.c>").map(|_| ()), Ok(()));
        assert!(parse(b"MAIL FROM:a@b.c").is_err());
        assert!(parse(b"MAIL FROM:<a@b.c>SIZE=1").is_err());
    }

    #[test]
    fn path_limits_and_source_routes() {
        let local = "a".repeat(65);
        assert_eq!(
            parse(format!("RCPT TO:<{local}@b.c>").as_bytes()),
            Err(CommandError::PathTooLong)
        );
        let long = format!("RCPT TO:<a@{}.com>", "d".repeat(260));
        assert_eq!(parse(long.as_bytes()), Err(CommandError::PathTooLong));
        assert_eq!(
            parse(b"RCPT TO:<@relay.example:j@journal.contoso.com>"),
            Ok(Command::Rcpt {
                to: "j@journal.contoso.com"
            })
        );
        assert_eq!(
            parse(b"RCPT TO:<>"),
            Err(CommandError::BadAddress("empty address"))
        );
        assert_eq!(
            parse(b"RCPT TO:<nodomain>"),
            Err(CommandError::BadAddress("address without a domain"))
        );
    }

    #[test]
    fn bdat_sizes() {
        assert_eq!(
            parse(b"BDAT 18446744073709551615"),
            Ok(Command::Bdat {
                size: u64::MAX,
                last: false
            })
        );
        assert_eq!(
            parse(b"BDAT 18446744073709551616"),
            Err(CommandError::BadChunkSize)
        );
        assert_eq!(parse(b"BDAT"), Err(CommandError::BadChunkSize));
        assert_eq!(parse(b"BDAT -1"), Err(CommandError::BadChunkSize));
        assert_eq!(parse(b"BDAT 10 FIRST"), Err(CommandError::BadChunkSize));
        assert_eq!(
            parse(b"bdat 10 last"),
            Ok(Command::Bdat {
                size: 10,
                last: true
            })
        );
    }
}
