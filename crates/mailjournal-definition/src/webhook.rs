//! Webhook addresses of `[[alert]]`: where connector status changes are posted.

use std::fmt;
use std::str::FromStr;

/// An `http://` or `https://` URL, split into what an HTTP/1.1 client needs. No user
/// information (a password in a URL ends up in logs) and no fragment.
///
/// ```
/// use mailjournal_definition::WebhookUrl;
/// let url: WebhookUrl = "https://hooks.example.net/services/T0/B0?x=1".parse().unwrap();
/// assert!(url.tls);
/// assert_eq!((url.host.as_str(), url.port), ("hooks.example.net", 443));
/// assert_eq!(url.path, "/services/T0/B0?x=1");
/// let local: WebhookUrl = "http://[::1]:9000".parse().unwrap();
/// assert_eq!((local.host.as_str(), local.port, local.path.as_str()), ("::1", 9000, "/"));
/// assert!("ftp://x".parse::<WebhookUrl>().is_err());
/// assert!("https://user:pw@x".parse::<WebhookUrl>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebhookUrl {
    /// `https`.
    pub tls: bool,
    /// The host name or IP address (without brackets).
    pub host: String,
    /// The port (80 or 443 unless given).
    pub port: u16,
    /// The path and query, at least `/`.
    pub path: String,
}

/// Why a text is not a [`WebhookUrl`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    /// Not `http://` or `https://`.
    #[error("the scheme must be http:// or https://")]
    Scheme,
    /// No host, or one that cannot be a host name.
    #[error("no valid host")]
    Host,
    /// A port that is not a number from 1 to 65535.
    #[error("not a valid port")]
    Port,
    /// `user:password@` in the URL.
    #[error("user information in the URL is not accepted (it would be logged)")]
    UserInfo,
    /// A fragment, spaces or control characters.
    #[error("characters a request line cannot carry (spaces, control characters or a fragment)")]
    Characters,
}

impl FromStr for WebhookUrl {
    type Err = WebhookUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (tls, rest) = if let Some(rest) = strip_prefix_ignore_case(text, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(text, "http://") {
            (false, rest)
        } else {
            return Err(WebhookUrlError::Scheme);
        };
        if rest
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'#' || !b.is_ascii())
        {
            return Err(WebhookUrlError::Characters);
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(WebhookUrlError::UserInfo);
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or(WebhookUrlError::Host)?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(WebhookUrlError::Host);
            }
            (host, after.strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
        if !host_ok {
            return Err(WebhookUrlError::Host);
        }
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 => n,
                _ => return Err(WebhookUrlError::Port),
            },
            None if tls => 443,
            None => 80,
        };
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        Ok(WebhookUrl {
            tls,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_or_refused_with_the_reason() {
        let url: WebhookUrl = "HTTP://Alerts.Example.NET:8080".parse().unwrap();
        assert_eq!(url.to_string(), "http://alerts.example.net:8080/");
        let url: WebhookUrl = "http://127.0.0.1:9?q".parse().unwrap();
        assert_eq!(url.path, "/?q");
        for (text, error) in [
            ("mailto:x@y", WebhookUrlError::Scheme),
            ("http://", WebhookUrlError::Host),
            ("http://:80/", WebhookUrlError::Host),
            ("http://a b/", WebhookUrlError::Characters),
            ("http://x/#frag", WebhookUrlError::Characters),
            ("http://x:0/", WebhookUrlError::Port),
            ("http://x:99999/", WebhookUrlError::Port),
            ("http://[zz]/", WebhookUrlError::Host),
            ("http://u@x/", WebhookUrlError::UserInfo),
            ("http://x\r\nHost: y/", WebhookUrlError::Characters),
        ] {
            assert_eq!(text.parse::<WebhookUrl>(), Err(error), "{text}");
        }
    }
}
