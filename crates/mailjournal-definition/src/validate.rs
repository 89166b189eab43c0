//! Validation of a whole [`Config`]: every problem at once, each with its field path, the
//! offending value and a hint.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::address::{EmailAddress, is_same_or_subdomain, normalize_domain};
use crate::directory::MAX_SUBDOMAINS_PER_ADDITION;
use crate::{Config, JournalDefinition, TransportType};

/// Largest initial process delay accepted: one week.
pub const MAX_INITIAL_PROCESS_DELAY_MINUTES: u32 = 7 * 24 * 60;
/// Most delivery wait attempts accepted.
pub const MAX_DELIVERY_WAIT_ATTEMPTS: u32 = 100;
/// Longest period of inactivity accepted: thirty days.
pub const MAX_PERIOD_OF_INACTIVITY_MINUTES: u32 = 30 * 24 * 60;
/// Shortest SMTP-AUTH password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Whether a problem stops the configuration from being used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Legal but suspicious: the server runs, the operator should look.
    Warning,
    /// The configuration cannot be used.
    Error,
}

/// One finding of [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Where, e.g. `journal[1].additional_source_ip_ranges[2]`.
    pub path: String,
    /// The offending value as written (empty when the problem is an absence).
    pub value: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}", self.path)?;
        if !self.value.is_empty() {
            write!(f, " = {:?}", self.value)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, " (hint: {})", self.hint)?;
        }
        Ok(())
    }
}

/// Every problem found in a configuration, in the order of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The findings.
    pub problems: Vec<Problem>,
}

impl Report {
    /// True when at least one problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
    }

    /// The first problem at exactly `path`, if any.
    pub fn at(&self, path: &str) -> Option<&Problem> {
        self.problems.iter().find(|p| p.path == path)
    }

    fn push(
        &mut self,
        severity: Severity,
        path: impl Into<String>,
        value: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.problems.push(Problem {
            severity,
            path: path.into(),
            value: value.into(),
            message: message.into(),
            hint: hint.into(),
        });
    }

    fn error(
        &mut self,
        path: impl Into<String>,
        value: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(Severity::Error, path, value, message, hint);
    }

    fn warning(
        &mut self,
        path: impl Into<String>,
        value: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(Severity::Warning, path, value, message, hint);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.problems {
            writeln!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Parses one CIDR range the way the specification asks for it to be written: with a mask
/// (`/32` for one IPv4 address) and without host bits.
///
/// ```
/// use mailjournal_definition::validate::parse_cidr;
/// assert!(parse_cidr("203.0.113.0/24").is_ok());
/// assert_eq!(parse_cidr("198.51.100.7").unwrap_err().1, "write a single address as 198.51.100.7/32");
/// assert_eq!(parse_cidr("203.0.113.9/24").unwrap_err().1, "did you mean 203.0.113.0/24?");
/// ```
pub fn parse_cidr(text: &str) -> Result<IpNet, (String, String)> {
    let trimmed = text.trim();
    if let Ok(net) = trimmed.parse::<IpNet>() {
        if net.addr() != net.network() {
            return Err((
                "host bits are set: not a canonical CIDR range".to_owned(),
                format!("did you mean {}?", net.trunc()),
            ));
        }
        return Ok(net);
    }
    if let Ok(addr) = trimmed.parse::<IpAddr>() {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        return Err((
            "an address without a CIDR mask".to_owned(),
            format!("write a single address as {addr}/{bits}"),
        ));
    }
    Err((
        "not a CIDR range".to_owned(),
        "write ranges as ADDRESS/PREFIX, e.g. 203.0.113.0/24 or 2001:db8::/32".to_owned(),
    ))
}

/// Why a password is too weak to protect the journal connector, if it is.
fn weak_password(password: &str, service_address: &str) -> Option<String> {
    let lower = password.to_lowercase();
    let local = service_address.split('@').next().unwrap_or_default();
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Some(format!("shorter than {MIN_PASSWORD_LEN} characters"));
    }
    if lower == service_address.to_lowercase() || (!local.is_empty() && lower.contains(local)) {
        return Some("contains the service address, which is the user name".to_owned());
    }
    let distinct: std::collections::HashSet<char> = password.chars().collect();
    if distinct.len() < 5 {
        return Some("uses fewer than 5 distinct characters".to_owned());
    }
    const COMMON: [&str; 6] = [
        "password", "qwerty", "letmein", "123456", "welcome", "journal",
    ];
    if COMMON.iter().any(|w| lower.contains(w)) {
        return Some("built on a common password".to_owned());
    }
    None
}

impl Config {
    /// Checks the whole configuration and returns every problem found.
    ///
    /// ```
    /// use mailjournal_definition::{provision, Severity};
    /// let mut config = provision::starter_config("contoso.com").unwrap();
    /// config.journal[0].additional_source_ip_ranges = vec!["10.0.0.1".into()];
    /// config.journal[0].use_smtp_authentication = true;
    /// let report = config.validate();
    /// let paths: Vec<_> = report.errors().map(|p| p.path.as_str()).collect();
    /// assert_eq!(paths, ["journal[0].additional_source_ip_ranges[0]", "journal[0].password"]);
    /// ```
    pub fn validate(&self) -> Report {
        let mut report = Report::default();
        self.validate_server(&mut report);
        let domains = self.validate_domains(&mut report);
        let known = self.validate_directory(&mut report, &domains);
        let mut seen_service: HashMap<String, usize> = HashMap::new();
        for (index, journal) in self.journal.iter().enumerate() {
            self.validate_journal(
                &mut report,
                index,
                journal,
                &domains,
                &known,
                &mut seen_service,
            );
        }
        self.validate_retention(&mut report);
        self.validate_operator_view(&mut report);
        self.validate_archive(&mut report);
        report
    }

    /// The `[archive]` table.
    fn validate_archive(&self, report: &mut Report) {
        let Some(archive) = &self.archive else {
            return;
        };
        if archive.backend == crate::ArchiveBackend::Embedded {
            let set = [
                ("node_name", archive.node_name.is_some()),
                ("postgres_url", archive.postgres_url.is_some()),
                ("s3_endpoint", archive.s3_endpoint.is_some()),
                ("s3_bucket", archive.s3_bucket.is_some()),
            ];
            for (key, _) in set.iter().filter(|(_, is_set)| *is_set) {
                report.warning(
                    format!("archive.{key}"),
                    "",
                    "ignored: the embedded backend keeps the archive under data_dir",
                    "backend = \"shared\" to use it",
                );
            }
            return;
        }
        match archive.node_name.as_deref() {
            None | Some("") => report.error(
                "archive.node_name",
                "",
                "the shared backend needs a name for this receiver",
                "unique per receiver, e.g. \"mx1\"",
            ),
            Some(name)
                if name.len() > 63
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                report.error(
                    "archive.node_name",
                    name,
                    "at most 63 letters, digits, '-', '_' or '.'",
                    "e.g. \"mx1\"",
                )
            }
            Some(_) => {}
        }
        match archive.postgres_url.as_deref() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let authority = url
                    .split_once("://")
                    .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
                let has_password = authority
                    .rsplit_once('@')
                    .is_some_and(|(user, _)| user.contains(':'));
                if has_password {
                    report.warning(
                        "archive.postgres_url",
                        "",
                        "holds a password: anyone who reads the configuration file has it",
                        "leave it out of the URL and set PGPASSWORD in the service's environment",
                    );
                }
            }
            Some(url) => report.error(
                "archive.postgres_url",
                url,
                "not a PostgreSQL URL",
                "postgres://journal@127.0.0.1:5432/journal",
            ),
            None => report.error(
                "archive.postgres_url",
                "",
                "the shared backend needs its PostgreSQL database",
                "postgres://journal@127.0.0.1:5432/journal",
            ),
        }
        if let Some(endpoint) = &archive.s3_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            report.error(
                "archive.s3_endpoint",
                endpoint.clone(),
                "not an http:// or https:// URL",
                "e.g. \"http://127.0.0.1:3900\" (Garage), or no key for AWS",
            );
        }
        for (key, value, hint) in [
            (
                "s3_region",
                &archive.s3_region,
                "Garage's s3_region (\"garage\"), or the AWS region",
            ),
            (
                "s3_bucket",
                &archive.s3_bucket,
                "the bucket the content goes to, e.g. \"journal-archive\"",
            ),
        ] {
            if value.as_deref().is_none_or(str::is_empty) {
                report.error(
                    format!("archive.{key}"),
                    "",
                    "the shared backend needs it",
                    hint,
                );
            }
        }
    }

    /// The admin listener and the alert webhooks.
    fn validate_operator_view(&self, report: &mut Report) {
        if let Some(admin) = &self.admin {
            if admin.listen.is_empty() {
                report.error(
                    "admin.listen",
                    "",
                    "no listen address",
                    format!(
                        "\"{}\", or no [admin] table to turn it off",
                        crate::config::DEFAULT_ADMIN_LISTEN
                    ),
                );
            }
            for (i, listen) in admin.listen.iter().enumerate() {
                match listen.parse::<SocketAddr>() {
                    Err(_) => report.error(
                        format!("admin.listen[{i}]"),
                        listen,
                        "not a socket address",
                        "e.g. \"127.0.0.1:8025\"",
                    ),
                    Ok(address) if !address.ip().is_loopback() && admin.token_file.is_none() => {
                        report.warning(
                            format!("admin.listen[{i}]"),
                            listen,
                            "reachable beyond this host without a token: anyone who reaches it reads the queue details",
                            "set admin.token_file, or listen on 127.0.0.1",
                        )
                    }
                    Ok(_) => {}
                }
            }
        }
        for (i, alert) in self.alert.iter().enumerate() {
            if let Err(e) = alert.webhook_url.parse::<crate::WebhookUrl>() {
                report.error(
                    format!("alert[{i}].webhook_url"),
                    alert.webhook_url.clone(),
                    e.to_string(),
                    "e.g. \"https://alerts.example.net/hooks/journal\"",
                );
            }
        }
    }

    /// Retention periods and legal holds.
    fn validate_retention(&self, report: &mut Report) {
        for (i, journal) in self.journal.iter().enumerate() {
            if journal.retention_days == Some(0) {
                report.error(
                    format!("journal[{i}].retention_days"),
                    "0",
                    "every message would be deleted as soon as it is archived",
                    "a number of days (2555 for seven years), or no key to keep for ever",
                );
            }
        }
        if self.retention.as_received_days == Some(0) {
            report.warning(
                "retention.as_received_days",
                "0",
                "the as-received copies go as soon as the spool retires them: `get --as-received` then has nothing to give",
                "a number of days, or no key to keep them for ever",
            );
        }
        for (i, hold) in self.legal_hold.iter().enumerate() {
            let path = format!("legal_hold[{i}]");
            match (&hold.address, &hold.item) {
                (Some(address), None) => {
                    if EmailAddress::parse(address).is_err() {
                        report.error(
                            format!("{path}.address"),
                            address.clone(),
                            "not an email address",
                            "the address whose messages are held, e.g. legal@contoso.com",
                        );
                    }
                }
                (None, Some(item)) => {
                    if item.len() != 16 || !item.bytes().all(|b| b.is_ascii_hexdigit()) {
                        report.error(
                            format!("{path}.item"),
                            item.clone(),
                            "not a queue id",
                            "the 16 hex digits of `250 2.0.0 Ok: queued as <ID>`",
                        );
                    }
                }
                _ => report.error(
                    path,
                    "",
                    "a legal hold names an address or an item",
                    "address = \"legal@contoso.com\", or item = \"<queue id>\" (one hold each)",
                ),
            }
        }
    }

    fn validate_server(&self, report: &mut Report) {
        let server = &self.server;
        if server.listen.is_empty() {
            report.error(
                "server.listen",
                "",
                "no listen address",
                "add one, e.g. \"0.0.0.0:25\"",
            );
        }
        for (i, listen) in server.listen.iter().enumerate() {
            if listen.parse::<SocketAddr>().is_err() {
                report.error(
                    format!("server.listen[{i}]"),
                    listen,
                    "not a socket address",
                    "write IP:PORT, e.g. 0.0.0.0:25 or [::]:25",
                );
            }
        }
        if normalize_domain(&server.hostname).is_err() {
            report.warning(
                "server.hostname",
                &server.hostname,
                "not a fully qualified host name",
                "use the name the MX record points at",
            );
        }
        for (i, range) in server.authorized_outbound_ranges.iter().enumerate() {
            if let Err((message, hint)) = parse_cidr(range) {
                report.error(
                    format!("server.authorized_outbound_ranges[{i}]"),
                    range,
                    message,
                    hint,
                );
            }
        }
        match (&server.tls_certificate, &server.tls_private_key) {
            (Some(_), None) => report.error(
                "server.tls_private_key",
                "",
                "a certificate without its private key",
                "set tls_private_key to the PEM key of tls_certificate",
            ),
            (None, Some(_)) => report.error(
                "server.tls_certificate",
                "",
                "a private key without its certificate",
                "set tls_certificate to the PEM chain",
            ),
            _ => {}
        }
        if server.max_message_size_bytes == 0 {
            report.error(
                "server.max_message_size_bytes",
                "0",
                "no message could be accepted",
                "Exchange Online sends up to 150 MiB: 157286400",
            );
        } else if server.max_message_size_bytes < crate::config::DEFAULT_MAX_MESSAGE_SIZE_BYTES {
            report.warning(
                "server.max_message_size_bytes",
                server.max_message_size_bytes.to_string(),
                "smaller than the largest message Exchange Online sends: larger journal reports will bounce to the alternate journaling mailbox",
                "157286400 (150 MiB)",
            );
        }
        if server.max_connections == 0 {
            report.error(
                "server.max_connections",
                "0",
                "no connection could be accepted",
                "the default is 1000",
            );
        }
        // Below one message's size a full disk is found by a failed write in the middle of
        // a commit instead of a 452 before it.
        if server.free_space_reserve_bytes < server.max_message_size_bytes.min(64 * 1024 * 1024) {
            report.warning(
                "server.free_space_reserve_bytes",
                server.free_space_reserve_bytes.to_string(),
                "smaller than a large message: the disk may fill in the middle of a message rather than be refused before it",
                "268435456 (256 MiB, the default)",
            );
        }
    }

    /// Checks the internal domains; returns the valid ones, normalised.
    fn validate_domains(&self, report: &mut Report) -> Vec<String> {
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut domains = Vec::new();
        for (i, entry) in self.internal_domain.iter().enumerate() {
            if entry.name.is_none() && entry.names.is_empty() {
                report.error(
                    format!("internal_domain[{i}]"),
                    "",
                    "no domain name",
                    "set name = \"...\" (or names = [...] for up to 100 subdomains)",
                );
            }
            if entry.names.len() > MAX_SUBDOMAINS_PER_ADDITION {
                report.error(
                    format!("internal_domain[{i}].names"),
                    entry.names.len().to_string(),
                    format!("more than {MAX_SUBDOMAINS_PER_ADDITION} subdomains in one addition"),
                    "split them over several [[internal_domain]] entries",
                );
            }
            let paths = entry
                .name
                .iter()
                .map(|n| (format!("internal_domain[{i}].name"), n))
                .chain(
                    entry
                        .names
                        .iter()
                        .enumerate()
                        .map(|(j, n)| (format!("internal_domain[{i}].names[{j}]"), n)),
                );
            for (path, name) in paths {
                match normalize_domain(name) {
                    Err(e) => report.error(
                        path,
                        name,
                        format!("not a domain name: {e}"),
                        "write the bare domain, e.g. journal.contoso.com",
                    ),
                    Ok(domain) => {
                        if let Some(first) = seen.get(&domain) {
                            report.error(
                                path,
                                name,
                                format!("duplicate domain, already at {first}"),
                                "list each domain once",
                            );
                        } else {
                            seen.insert(domain.clone(), path);
                            domains.push(domain);
                        }
                    }
                }
            }
        }
        domains
    }

    /// Checks the known addresses; returns the valid ones, normalised.
    fn validate_directory(&self, report: &mut Report, domains: &[String]) -> Vec<String> {
        let mut known = Vec::new();
        for (i, text) in self.directory.known_addresses.iter().enumerate() {
            let path = format!("directory.known_addresses[{i}]");
            match EmailAddress::parse(text) {
                Err(e) => report.error(
                    path,
                    text,
                    format!("not an address: {e}"),
                    "write local@domain",
                ),
                Ok(address) => {
                    if !domains
                        .iter()
                        .any(|d| is_same_or_subdomain(address.domain(), d))
                    {
                        report.warning(
                            path,
                            text,
                            "not on an internal domain, so never used",
                            "add its domain under [[internal_domain]] or remove it",
                        );
                    }
                    known.push(address.as_str().to_owned());
                }
            }
        }
        known
    }

    fn validate_journal(
        &self,
        report: &mut Report,
        index: usize,
        journal: &JournalDefinition,
        domains: &[String],
        known: &[String],
        seen_service: &mut HashMap<String, usize>,
    ) {
        let at = |field: &str| format!("journal[{index}].{field}");

        if journal.description.trim().is_empty() {
            report.error(
                at("description"),
                "",
                "empty description",
                "name the definition, e.g. \"Microsoft 365\"",
            );
        }
        if let TransportType::Unsupported(other) = &journal.transport_type {
            report.error(
                at("transport_type"),
                other,
                "unknown transport type",
                "the only transport type is \"smtp\"",
            );
        }

        self.validate_service_address(report, index, journal, domains, known, seen_service);

        for (i, range) in journal.additional_source_ip_ranges.iter().enumerate() {
            if let Err((message, hint)) = parse_cidr(range) {
                report.error(
                    at(&format!("additional_source_ip_ranges[{i}]")),
                    range,
                    message,
                    hint,
                );
            }
        }

        if journal.use_smtp_authentication {
            if journal.password.is_empty() {
                report.error(
                    at("password"),
                    "",
                    "SMTP authentication is on but no password is set",
                    "set a password of at least 12 characters; the user name is the service address",
                );
            } else if let Some(why) =
                weak_password(&journal.password, &journal.service_email_address)
            {
                report.error(
                    at("password"),
                    "",
                    format!("password too weak: {why}"),
                    "use a long random password, e.g. 24 characters from a password generator",
                );
            }
        } else if !journal.password.is_empty() {
            report.warning(
                at("password"),
                "",
                "a password is set but SMTP authentication is off: it is never checked",
                "set use_smtp_authentication = true, or remove the password",
            );
        }

        if journal.initial_process_delay_minutes > MAX_INITIAL_PROCESS_DELAY_MINUTES {
            report.error(
                at("initial_process_delay_minutes"),
                journal.initial_process_delay_minutes.to_string(),
                format!("longer than a week ({MAX_INITIAL_PROCESS_DELAY_MINUTES} minutes)"),
                "leave the default value (0) unless support asks otherwise",
            );
        }
        if journal.delivery_wait_attempts == 0
            || journal.delivery_wait_attempts > MAX_DELIVERY_WAIT_ATTEMPTS
        {
            report.error(
                at("delivery_wait_attempts"),
                journal.delivery_wait_attempts.to_string(),
                format!("must be between 1 and {MAX_DELIVERY_WAIT_ATTEMPTS}"),
                "leave the default value (3) unless support asks otherwise",
            );
        }
        if journal.period_of_inactivity_allowed_minutes == 0
            || journal.period_of_inactivity_allowed_minutes > MAX_PERIOD_OF_INACTIVITY_MINUTES
        {
            report.error(
                at("period_of_inactivity_allowed_minutes"),
                journal.period_of_inactivity_allowed_minutes.to_string(),
                format!("must be between 1 and {MAX_PERIOD_OF_INACTIVITY_MINUTES} (30 days)"),
                "the default is 180; raise it for quiet environments",
            );
        }

        if !journal.disabled {
            if !journal.encrypted {
                report.warning(
                    at("encrypted"),
                    "false",
                    "journal reports will be accepted over clear text",
                    "Microsoft 365 always sends with TLS: keep encrypted = true",
                );
            }
            if !journal.use_smtp_authentication && journal.additional_source_ip_ranges.is_empty() {
                report.warning(
                    at("additional_source_ip_ranges"),
                    "",
                    "no authentication and no source ranges: only the authorized outbound ranges can send",
                    "add the sending servers' ranges (for Microsoft 365, its outbound ranges) or turn on SMTP authentication",
                );
            }
        }
    }

    fn validate_service_address(
        &self,
        report: &mut Report,
        index: usize,
        journal: &JournalDefinition,
        domains: &[String],
        known: &[String],
        seen_service: &mut HashMap<String, usize>,
    ) {
        let path = format!("journal[{index}].service_email_address");
        let text = &journal.service_email_address;
        let address = match EmailAddress::parse(text) {
            Ok(address) => address,
            Err(e) => {
                report.error(
                    path,
                    text,
                    format!("not an address: {e}"),
                    "use journaling@journal.<primary domain>",
                );
                return;
            }
        };
        let domain = address.domain();
        let parent = domains
            .iter()
            .find(|d| d.as_str() != domain && is_same_or_subdomain(domain, d));
        if !domains.iter().any(|d| d == domain) {
            report.error(
                &path,
                text,
                format!("{domain} is not a configured journal subdomain"),
                format!("add it with [[internal_domain]] name = \"{domain}\""),
            );
        } else if parent.is_none() {
            let tenant = domain.split_once('.').map_or(domain, |(_, rest)| rest);
            report.error(
                &path,
                text,
                format!(
                    "{domain} is not a subdomain of an internal domain: the tenant domain is missing"
                ),
                format!(
                    "add the tenant domain ({tenant}) under [[internal_domain]] and journal to a subdomain such as journal.{tenant}"
                ),
            );
        }
        if known.iter().any(|k| k == address.as_str()) {
            report.error(
                &path,
                text,
                "the service address is an internal mailbox: Microsoft does not support journaling to yourself",
                "use a dedicated address on the journal subdomain, e.g. journaling@journal.<domain>",
            );
        }
        if !journal.disabled {
            if let Some(first) = seen_service.get(address.as_str()) {
                report.error(
                    &path,
                    text,
                    format!("journal[{first}] already uses this service address"),
                    "give each enabled definition its own address, or disable one",
                );
            } else {
                seen_service.insert(address.as_str().to_owned(), index);
            }
        }
        // Anti-spoofing on the journal subdomain rejects reports: they carry the tenant's own
        // addresses but come from Microsoft's servers.
        for entry in &self.internal_domain {
            let covers = entry
                .domains()
                .any(|d| normalize_domain(d).is_ok_and(|d| d == domain));
            if covers
                && (entry.anti_spoofing_policy
                    || entry.inbound_checks != crate::InboundChecks::AcceptAllInbounds)
            {
                report.warning(
                    &path,
                    text,
                    format!("the journal subdomain {domain} does not use the journaling values"),
                    "set inbound_checks = \"accept_all_inbounds\" and anti_spoofing_policy = false",
                );
            }
        }
    }
}

#[cfg(test)]
mod archive_tests {
    use crate::{ArchiveBackend, Config, provision};

    #[test]
    fn the_shared_backend_needs_its_keys() {
        let text = "[archive]\nbackend = \"shared\"\nnode_name = \"mx1\"\n\
                    postgres_url = \"postgres://journal@127.0.0.1:5432/journal\"\n\
                    s3_endpoint = \"http://127.0.0.1:3900\"\ns3_region = \"garage\"\n\
                    s3_bucket = \"journal-archive\"\n";
        let parsed = Config::from_toml(text).unwrap();
        let mut config = provision::starter_config("contoso.com").unwrap();
        config.archive = parsed.archive.clone();
        assert_eq!(
            config.archive.as_ref().unwrap().backend,
            ArchiveBackend::Shared
        );
        let report = config.validate();
        assert!(
            report
                .problems
                .iter()
                .all(|p| !p.path.starts_with("archive")),
            "{report}"
        );

        let archive = config.archive.as_mut().unwrap();
        archive.node_name = Some("mx 1".into());
        archive.postgres_url = Some("mysql://x".into());
        archive.s3_endpoint = Some("127.0.0.1:3900".into());
        archive.s3_bucket = None;
        let report = config.validate();
        let errors: Vec<_> = report.errors().map(|p| p.path.as_str()).collect();
        assert_eq!(
            errors,
            [
                "archive.node_name",
                "archive.postgres_url",
                "archive.s3_endpoint",
                "archive.s3_bucket"
            ]
        );
        let archive = config.archive.as_mut().unwrap();
        archive.node_name = Some("mx1".into());
        archive.postgres_url = Some("postgres://journal:pw@db/journal".into());
        archive.s3_endpoint = None;
        archive.s3_bucket = Some("b".into());
        let report = config.validate();
        assert!(!report.has_errors(), "{report}");
        assert!(
            report.at("archive.postgres_url").is_some(),
            "a password in the URL warns"
        );
    }
}

#[cfg(test)]
mod operator_view_tests {
    use crate::{AdminSettings, AlertSettings, Config, provision};

    #[test]
    fn admin_and_alert_tables_are_read_and_checked() {
        let text = "[admin]\n[[alert]]\nwebhook_url = \"http://127.0.0.1:9/hook\"\n";
        let config = Config::from_toml(text).unwrap();
        assert_eq!(config.admin, Some(AdminSettings::default()));
        assert_eq!(config.admin.unwrap().listen, ["127.0.0.1:8025"]);
        assert_eq!(config.alert[0].webhook_url, "http://127.0.0.1:9/hook");

        let mut config = provision::starter_config("contoso.com").unwrap();
        config.admin = Some(AdminSettings {
            listen: vec!["nonsense".into(), "0.0.0.0:8025".into()],
            token_file: None,
        });
        config.alert = vec![AlertSettings {
            webhook_url: "smtp://x".into(),
        }];
        let report = config.validate();
        let errors: Vec<_> = report.errors().map(|p| p.path.as_str()).collect();
        assert_eq!(errors, ["admin.listen[0]", "alert[0].webhook_url"]);
        let warnings: Vec<_> = report.warnings().map(|p| p.path.as_str()).collect();
        assert!(warnings.contains(&"admin.listen[1]"), "{warnings:?}");
        // With a token, listening beyond loopback is the operator's choice.
        config.admin.as_mut().unwrap().token_file = Some("/etc/journal/admin-token".into());
        let report = config.validate();
        assert!(report.at("admin.listen[1]").is_none(), "{report}");
    }
}

#[cfg(test)]
mod retention_tests {
    use crate::{LegalHold, provision};

    #[test]
    fn retention_and_holds_are_checked_with_their_paths() {
        let mut config = provision::starter_config("contoso.com").unwrap();
        config.journal[0].retention_days = Some(0);
        config.retention.as_received_days = Some(0);
        config.legal_hold = vec![
            LegalHold {
                address: Some("not an address".into()),
                ..Default::default()
            },
            LegalHold {
                item: Some("123".into()),
                ..Default::default()
            },
            LegalHold::default(),
            LegalHold {
                address: Some("legal@contoso.com".into()),
                item: Some("00000000000000AA".into()),
                ..Default::default()
            },
            LegalHold {
                address: Some("Legal@Contoso.com".into()),
                reason: "case 42".into(),
                ..Default::default()
            },
        ];
        let report = config.validate();
        let errors: Vec<_> = report.errors().map(|p| p.path.as_str()).collect();
        assert_eq!(
            errors,
            [
                "journal[0].retention_days",
                "legal_hold[0].address",
                "legal_hold[1].item",
                "legal_hold[2]",
                "legal_hold[3]"
            ]
        );
        let warnings: Vec<_> = report.warnings().map(|p| p.path.as_str()).collect();
        assert!(
            warnings.contains(&"retention.as_received_days"),
            "{warnings:?}"
        );
        config.journal[0].retention_days = Some(2555);
        config.legal_hold.drain(..4);
        let (policy, _) = crate::Policy::from_config(&config).unwrap();
        assert_eq!(policy.held_addresses[0].as_str(), "legal@contoso.com");
        assert_eq!(policy.as_received_days, Some(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InternalDomain, provision};

    fn base() -> Config {
        let mut config = provision::starter_config("contoso.com").unwrap();
        config.journal[0].additional_source_ip_ranges = vec!["203.0.113.0/24".into()];
        config
    }

    /// One row per rule: a change to the valid base config, and the exact path and message it
    /// must produce.
    #[test]
    fn each_rule_reports_its_path_and_message() {
        type Edit = fn(&mut Config);
        let cases: Vec<(Edit, Severity, &str, &str)> = vec![
            (
                |c| c.journal[0].additional_source_ip_ranges[0] = "203.0.113.7".into(),
                Severity::Error,
                "journal[0].additional_source_ip_ranges[0]",
                "an address without a CIDR mask",
            ),
            (
                |c| {
                    c.journal[0]
                        .additional_source_ip_ranges
                        .push("203.0.113.7/24".into())
                },
                Severity::Error,
                "journal[0].additional_source_ip_ranges[1]",
                "host bits are set: not a canonical CIDR range",
            ),
            (
                |c| {
                    c.journal[0]
                        .additional_source_ip_ranges
                        .push("nonsense".into())
                },
                Severity::Error,
                "journal[0].additional_source_ip_ranges[1]",
                "not a CIDR range",
            ),
            (
                |c| c.server.authorized_outbound_ranges = vec!["2001:db8::1".into()],
                Severity::Error,
                "server.authorized_outbound_ranges[0]",
                "an address without a CIDR mask",
            ),
            (
                |c| c.journal[0].service_email_address = "journaling".into(),
                Severity::Error,
                "journal[0].service_email_address",
                "not an address: no '@' between local part and domain",
            ),
            (
                |c| c.journal[0].service_email_address = "journaling@journal.fabrikam.com".into(),
                Severity::Error,
                "journal[0].service_email_address",
                "journal.fabrikam.com is not a configured journal subdomain",
            ),
            (
                |c| {
                    c.internal_domain.remove(0);
                },
                Severity::Error,
                "journal[0].service_email_address",
                "journal.contoso.com is not a subdomain of an internal domain: the tenant domain is missing",
            ),
            (
                |c| c.journal[0].use_smtp_authentication = true,
                Severity::Error,
                "journal[0].password",
                "SMTP authentication is on but no password is set",
            ),
            (
                |c| {
                    c.journal[0].use_smtp_authentication = true;
                    c.journal[0].password = "short".into();
                },
                Severity::Error,
                "journal[0].password",
                "password too weak: shorter than 12 characters",
            ),
            (
                |c| {
                    c.journal[0].use_smtp_authentication = true;
                    c.journal[0].password = "journaling-2026!".into();
                },
                Severity::Error,
                "journal[0].password",
                "password too weak: contains the service address, which is the user name",
            ),
            (
                |c| {
                    c.journal[0].use_smtp_authentication = true;
                    c.journal[0].password = "aaaaaaaaaaaaaaab".into();
                },
                Severity::Error,
                "journal[0].password",
                "password too weak: uses fewer than 5 distinct characters",
            ),
            (
                |c| {
                    let copy = c.journal[0].clone();
                    c.journal.push(copy);
                },
                Severity::Error,
                "journal[1].service_email_address",
                "journal[0] already uses this service address",
            ),
            (
                |c| {
                    c.internal_domain[1].name = None;
                    c.internal_domain[1].names =
                        (0..101).map(|i| format!("j{i}.contoso.com")).collect();
                },
                Severity::Error,
                "internal_domain[1].names",
                "more than 100 subdomains in one addition",
            ),
            (
                |c| c.journal[0].delivery_wait_attempts = 0,
                Severity::Error,
                "journal[0].delivery_wait_attempts",
                "must be between 1 and 100",
            ),
            (
                |c| c.journal[0].period_of_inactivity_allowed_minutes = 0,
                Severity::Error,
                "journal[0].period_of_inactivity_allowed_minutes",
                "must be between 1 and 43200 (30 days)",
            ),
            (
                |c| c.journal[0].initial_process_delay_minutes = 100_000,
                Severity::Error,
                "journal[0].initial_process_delay_minutes",
                "longer than a week (10080 minutes)",
            ),
            (
                |c| {
                    c.directory
                        .known_addresses
                        .push("Journaling@journal.contoso.com".into())
                },
                Severity::Error,
                "journal[0].service_email_address",
                "the service address is an internal mailbox: Microsoft does not support journaling to yourself",
            ),
            (
                |c| c.journal[0].transport_type = TransportType::Unsupported("pop3".into()),
                Severity::Error,
                "journal[0].transport_type",
                "unknown transport type",
            ),
            (
                |c| {
                    c.internal_domain
                        .push(InternalDomain::named("CONTOSO.com."))
                },
                Severity::Error,
                "internal_domain[2].name",
                "duplicate domain, already at internal_domain[0].name",
            ),
            (
                |c| {
                    c.internal_domain
                        .push(InternalDomain::named("bad_domain.com"))
                },
                Severity::Error,
                "internal_domain[2].name",
                "not a domain name: '_' is not allowed in a host name",
            ),
            (
                |c| c.journal[0].encrypted = false,
                Severity::Warning,
                "journal[0].encrypted",
                "journal reports will be accepted over clear text",
            ),
            (
                |c| c.journal[0].additional_source_ip_ranges.clear(),
                Severity::Warning,
                "journal[0].additional_source_ip_ranges",
                "no authentication and no source ranges: only the authorized outbound ranges can send",
            ),
            (
                |c| c.internal_domain[1].anti_spoofing_policy = true,
                Severity::Warning,
                "journal[0].service_email_address",
                "the journal subdomain journal.contoso.com does not use the journaling values",
            ),
            (
                |c| c.server.listen = vec!["localhost".into()],
                Severity::Error,
                "server.listen[0]",
                "not a socket address",
            ),
        ];
        assert!(!base().validate().has_errors());
        assert_eq!(base().validate().problems, vec![]);
        for (edit, severity, path, message) in cases {
            let mut config = base();
            edit(&mut config);
            let report = config.validate();
            let found = report
                .problems
                .iter()
                .find(|p| p.path == path && p.message == message);
            assert!(
                found.is_some_and(|p| p.severity == severity),
                "expected {severity:?} at {path}: {message}\ngot:\n{report}"
            );
        }
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let mut config = base();
        config.journal[0].additional_source_ip_ranges = vec!["1.2.3.4".into(), "5.6.7.8/8".into()];
        config.journal[0].delivery_wait_attempts = 0;
        config.journal[0].use_smtp_authentication = true;
        assert_eq!(config.validate().errors().count(), 4);
    }

    #[test]
    fn disabled_definitions_may_share_an_address() {
        let mut config = base();
        let mut copy = config.journal[0].clone();
        copy.disabled = true;
        config.journal.push(copy);
        assert!(!config.validate().has_errors());
    }

    #[test]
    fn cidr_hints_say_how_to_write_it() {
        assert_eq!(
            parse_cidr("2001:db8::1").unwrap_err().1,
            "write a single address as 2001:db8::1/128"
        );
        assert_eq!(
            parse_cidr("2001:db8::1/32").unwrap_err().1,
            "did you mean 2001:db8::/32?"
        );
        assert_eq!(
            parse_cidr(" 198.51.100.7/32 ").unwrap(),
            "198.51.100.7/32".parse::<IpNet>().unwrap()
        );
    }
}
