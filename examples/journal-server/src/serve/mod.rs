//! `journal-server serve`: wiring only. Configuration → policy; TLS (its certificate read
//! again on SIGHUP); the data-directory lock; the engine (`mailjournal::engine`: spool
//! recovery, the pipeline thread); one task per connection, admitted by [`limits`] (which
//! also signals stress) and slowed while archiving is behind; graceful shutdown on
//! SIGINT/SIGTERM, and exit 1 when the engine can no longer work.

mod connection;
mod data_lock;
mod error;
mod limits;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use mailjournal::definition::{ArchiveBackend, Config, Policy, provision};
use mailjournal::engine::{Engine, EngineOptions};
use mailjournal::queue::Duration;
use mailjournal::smtp::SessionConfig;
use mailjournal::status::ArchiveSource;
use tokio::net::TcpListener;
use tokio::sync::watch;

use error::{ServeError, TlsError};
use limits::Limits;
use mailjournal_admin::{Admin, ConnectorAlerts, Metrics};

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The configuration file (TOML, or JSON by extension).
    #[arg(long, conflicts_with = "dev", required_unless_present = "dev")]
    config: Option<PathBuf>,
    /// Embedded defaults for a first run: example.com provisioned, accepting from 127.0.0.0/8,
    /// a self-signed certificate, data in ./journal-data, listening on 127.0.0.1:2525.
    #[arg(long)]
    dev: bool,
    /// Override the listen addresses (e.g. 127.0.0.1:0 for tests; the bound address is printed).
    #[arg(long)]
    listen: Vec<String>,
    /// Override the admin listener's addresses (and turn it on); e.g. 127.0.0.1:0 for tests.
    #[arg(long)]
    admin_listen: Vec<String>,
    /// Override the data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seconds between match attempts (default 60, the queue's interval).
    #[arg(long, default_value_t = 60)]
    match_interval_seconds: u64,
    /// Spool log segment size in bytes (default 64 MiB); tests make it small so that
    /// segments fill, seal and retire within seconds.
    #[arg(long, hide = true)]
    spool_segment_bytes: Option<u64>,
    /// The longest the committer holds a batch for messages still being received, in
    /// microseconds (default 2000, at most a second; 0 turns lingering off, for comparisons).
    #[arg(long, hide = true)]
    max_commit_linger_us: Option<u64>,
    /// How many seconds a day of the retention periods lasts (default 86400): for tests and
    /// measurements that cannot wait for days.
    #[arg(long, hide = true)]
    retention_day_seconds: Option<u64>,
}

fn dev_config() -> Config {
    let mut config = provision::starter_config("example.com").unwrap_or_default();
    config.server.hostname = "localhost.localdomain".into();
    config.server.listen = vec!["127.0.0.1:2525".into()];
    config.server.data_dir = PathBuf::from("journal-data");
    config.admin = Some(mailjournal::definition::AdminSettings::default());
    if let Some(journal) = config.journal.first_mut() {
        journal.description = "Microsoft 365 (dev)".into();
        journal.additional_source_ip_ranges = vec!["127.0.0.0/8".into()];
    }
    config
}

pub(crate) fn serve(args: ServeArgs) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a terminal: log files and collectors get plain lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let mut config = match &args.config {
        Some(path) => match crate::config_cmd::load(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => dev_config(),
    };
    if !args.listen.is_empty() {
        config.server.listen = args.listen.clone();
    }
    if !args.admin_listen.is_empty() {
        config.admin.get_or_insert_with(Default::default).listen = args.admin_listen.clone();
    }
    if let Some(dir) = &args.data_dir {
        config.server.data_dir = dir.clone();
    }
    let (policy, warnings) = match Policy::from_config(&config) {
        Ok(ok) => ok,
        Err(report) => {
            eprint!("{report}");
            return ExitCode::from(1);
        }
    };
    for warning in &warnings.problems {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(config, policy, args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("journal-server: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(config: Config, policy: Policy, args: ServeArgs) -> Result<(), ServeError> {
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| ServeError::Io {
        path: data_dir.clone(),
        source,
    })?;
    // Before anything reads the spool, and held until the server is done with it.
    let _owner = data_lock::DataDirLock::acquire(&data_dir)?;
    let tls = match (
        &config.server.tls_certificate,
        &config.server.tls_private_key,
        args.dev,
    ) {
        (Some(cert), Some(key), false) => {
            let (tls, files) = tls::load(cert, key)?;
            reload_on_hangup(Some(files));
            tls
        }
        _ => {
            let (tls, path) = tls::self_signed(&data_dir, &config.server.hostname)?;
            println!("self-signed certificate: {}", path.display());
            reload_on_hangup(None);
            tls
        }
    };

    let mut options = EngineOptions::new(&data_dir);
    options.attempt_interval = Duration::seconds(args.match_interval_seconds.max(1));
    options.spool.reserve_bytes = config.server.free_space_reserve_bytes;
    if let Some(seconds) = args.retention_day_seconds {
        options.retention_day = Duration::seconds(seconds.max(1));
    }
    if let Some(bytes) = args.spool_segment_bytes {
        options.spool.segment_bytes = bytes.max(1);
    }
    if let Some(us) = args.max_commit_linger_us {
        options.spool.max_commit_linger = std::time::Duration::from_micros(us);
    }
    let policy = Arc::new(policy);
    let shared = match config.archive.as_ref() {
        Some(a) if a.backend == ArchiveBackend::Shared => Some(shared_options(a)?),
        _ => None,
    };
    // What the admin page and the alerts read: the archive this node writes.
    let source = Arc::new(match &shared {
        Some(options) => ArchiveSource::shared(options.clone(), &data_dir),
        None => ArchiveSource::embedded(&data_dir),
    });
    let alerts = if config.alert.is_empty() {
        None
    } else {
        let webhooks = config.alert.iter().map(|a| a.webhook_url.clone()).collect();
        Some(ConnectorAlerts::open(source.clone(), webhooks)?)
    };
    let admin_token = match config.admin.as_ref().and_then(|a| a.token_file.as_ref()) {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    // Recovery runs here, before any listener is bound (off the runtime's threads: the
    // shared backend blocks on a runtime of its own).
    let (opened_policy, dir) = (policy.clone(), data_dir.clone());
    let (engine, _started) = tokio::task::spawn_blocking(move || match shared {
        Some(shared) => {
            let (index, content) = mailjournal::archive::shared::open(&shared)
                .map_err(ServeError::SharedArchive)?;
            tracing::info!(node = %shared.node_name, number = index.node_number(), archive = ?shared, "shared archive");
            options.spool.node = index.node_number();
            Ok(Engine::open(opened_policy, Box::new(index), Box::new(content), options)?)
        }
        None => Ok::<_, ServeError>(Engine::open_embedded(opened_policy, &dir, options)?),
    })
    .await
    .map_err(|e| ServeError::Archive(e.to_string()))??;
    let metrics = Arc::new(Metrics::new(&policy));

    let session_config = SessionConfig {
        hostname: config.server.hostname.clone(),
        max_message_size: config.server.max_message_size_bytes,
        ..SessionConfig::default()
    };
    let limits = Limits::new(config.server.max_connections as usize);
    let shared = Arc::new(connection::Shared {
        session_config: Arc::new(session_config),
        policy,
        spool: engine.spool().clone(),
        tls: tokio_rustls::TlsAcceptor::from(tls),
        in_flow: engine.in_flow().clone(),
        stress: limits.stress(),
        metrics: metrics.clone(),
    });

    let mut listeners = Vec::new();
    for address in &config.server.listen {
        let listen = |source| ServeError::Listen {
            address: address.clone(),
            source,
        };
        let listener = TcpListener::bind(address).await.map_err(listen)?;
        let bound = listener.local_addr().map_err(listen)?;
        println!("listening on {bound}");
        listeners.push(listener);
    }
    let mut admin_listeners = Vec::new();
    for address in config.admin.iter().flat_map(|a| &a.listen) {
        let listen = |source| ServeError::Listen {
            address: address.clone(),
            source,
        };
        let listener = TcpListener::bind(address).await.map_err(listen)?;
        let bound = listener.local_addr().map_err(listen)?;
        println!("admin listening on http://{bound}/");
        admin_listeners.push(listener);
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let admin = Arc::new(Admin {
        source,
        metrics,
        readiness: engine.readiness(),
        token: admin_token,
    });
    for listener in admin_listeners {
        tasks.spawn(mailjournal_admin::serve(
            listener,
            admin.clone(),
            shutdown_rx.clone(),
        ));
    }
    // Not in `tasks`: it never ends by itself, and its outbox keeps what it has not sent.
    let alerts = alerts.map(|a| tokio::spawn(a.run(mailjournal_admin::WATCH_INTERVAL)));
    for listener in listeners {
        tasks.spawn(accept_loop(
            listener,
            shared.clone(),
            limits.clone(),
            shutdown_rx.clone(),
        ));
    }
    // A pipeline that died (a panic outside the parser's guard) would leave the server taking
    // mail that nothing archives, unnoticed; a spool that can no longer sync refuses every
    // message (451) until recovery has made its log trustworthy again. Either way: stop, so
    // that a restart (a service manager's) recovers every item from the spool.
    let failure = tokio::select! {
        () = wait_for_signal() => None,
        failure = engine.failed() => {
            tracing::error!(%failure, "shutting down");
            Some(failure)
        }
    };
    tracing::info!("shutting down: no new connections, finishing sessions");
    let _ = shutdown_tx.send(true);
    let deadline = tokio::time::sleep(std::time::Duration::from_secs(30));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut deadline => { tasks.abort_all(); break }
        }
    }
    if let Some(alerts) = alerts {
        alerts.abort();
    }
    drop(shared);
    // The pipeline ends its current round of due actions and takes what sessions committed
    // before it returns; items it has not reached resume at the next start.
    let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
    tracing::info!("stopped");
    failure.map_or(Ok(()), |f| Err(f.into()))
}

/// The shared backend's settings, with the S3 credentials from the `*_file` keys or the
/// environment (never from the configuration file itself).
pub(crate) fn shared_options(
    settings: &mailjournal::definition::ArchiveSettings,
) -> Result<mailjournal::archive::shared::SharedOptions, ServeError> {
    let secret = |file: &Option<PathBuf>, variable: &str| -> Result<String, ServeError> {
        match file {
            Some(path) => std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .map_err(|e| ServeError::Archive(format!("{}: {e}", path.display()))),
            None => std::env::var(variable)
                .map_err(|_| ServeError::Archive(format!("{variable} is not set"))),
        }
    };
    let required = |value: &Option<String>, key: &str| {
        value
            .clone()
            .ok_or_else(|| ServeError::Archive(format!("{key} is missing")))
    };
    Ok(mailjournal::archive::shared::SharedOptions {
        node_name: required(&settings.node_name, "node_name")?,
        postgres_url: required(&settings.postgres_url, "postgres_url")?,
        s3_endpoint: settings.s3_endpoint.clone(),
        s3_region: required(&settings.s3_region, "s3_region")?,
        s3_bucket: required(&settings.s3_bucket, "s3_bucket")?,
        s3_access_key_id: secret(&settings.s3_access_key_id_file, "AWS_ACCESS_KEY_ID")?,
        s3_secret_access_key: secret(&settings.s3_secret_access_key_file, "AWS_SECRET_ACCESS_KEY")?,
    })
}

/// The admin token: the file's first line, without surrounding white space.
pub(crate) fn read_token(path: &std::path::Path) -> Result<String, ServeError> {
    let refuse = |reason: String| ServeError::AdminToken {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
    let token = text.lines().next().unwrap_or("").trim();
    // A short token is guessed; header-unsafe characters cannot be sent.
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refuse(
            "the token must be at least 16 printable ASCII characters without spaces".into(),
        ));
    }
    Ok(token.to_owned())
}

/// Whether `serve` (or a `SIGHUP` reload) could use this certificate and key: both files read,
/// the chain not empty, the key the certificate's. For `check-config`.
pub(crate) fn check_tls_files(
    certificate: &std::path::Path,
    key: &std::path::Path,
) -> Result<(), TlsError> {
    tls::load(certificate, key).map(|_| ())
}

/// Reads the certificate files again on each `SIGHUP` (as `postfix reload` or `nginx -s
/// reload` would be used after a renewal); a pair that cannot be used is logged and the
/// current one stays. With a generated certificate there is nothing to read, but the signal is
/// still taken: a hangup must not end the server.
fn reload_on_hangup(files: Option<Arc<tls::FileCertificate>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: the TLS certificate is read at start only");
                return;
            }
        };
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let Some(files) = &files else {
                    tracing::info!("SIGHUP: the certificate is generated, nothing to reload");
                    continue;
                };
                match files.reload() {
                    Ok(()) => {
                        tracing::info!(certificate = %files.path().display(), "TLS certificate reloaded")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate not reloaded: the current one stays")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = files;
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<connection::Shared>,
    limits: Arc<Limits>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (mut stream, peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
            Ok(ok) => ok,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        match limits.admit(peer.ip()) {
            Ok(permit) => {
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                sessions.spawn(async move {
                    connection::serve(stream, peer, shared, shutdown).await;
                    drop(permit);
                });
            }
            Err(refusal) => {
                use tokio::io::AsyncWriteExt;
                tracing::info!(%peer, reply = refusal.reply().trim_end(), "connection refused");
                shared.metrics.refused(refusal.code());
                let _ = stream.write_all(refusal.reply().as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        }
        while sessions.try_join_next().is_some() {}
    }
    // Let sessions finish their commits; they answer new commands with 421.
    while sessions.join_next().await.is_some() {}
}
