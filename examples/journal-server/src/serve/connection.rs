//! One task per connection: socket IO around `mailjournal_smtp::Session`. All protocol rules
//! live in the session; this file reads, writes, spools, upgrades to TLS and keeps time.

use std::net::SocketAddr;
use std::sync::Arc;

use mailjournal::definition::Policy;
use mailjournal::engine::InFlow;
use mailjournal::smtp::{Event, Session, SessionConfig, TlsInfo, Transaction};
use mailjournal::spool::{Clock, CommitError, Envelope, Spool, SpoolWriter, SystemClock};
use mailjournal_admin::Metrics;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) session_config: Arc<SessionConfig>,
    pub(crate) policy: Arc<Policy>,
    pub(crate) spool: Arc<Spool>,
    pub(crate) tls: TlsAcceptor,
    /// Whether archiving is behind (then each new message waits a moment first).
    pub(crate) in_flow: Arc<InFlow>,
    /// True while the server is close to its `max_connections` (see `limits`).
    pub(crate) stress: watch::Receiver<bool>,
    /// What `/metrics` shows.
    pub(crate) metrics: Arc<Metrics>,
}

/// Slowest acceptable client while a message is being received, in bytes per second,
/// averaged over the message (Postfix's `smtpd_min_data_rate` idea).
const MIN_DATA_RATE: u64 = 500;

/// The longest a client may keep the server waiting for its next input (command, content
/// block or TLS handshake) while the server is under stress: Postfix's stress-dependent
/// `smtpd_timeout`. A sender that is actually transmitting never comes near it.
const STRESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The timeout of `class`, shortened under stress.
fn timeout_for(class: std::time::Duration, stress: bool) -> std::time::Duration {
    if stress {
        class.min(STRESS_TIMEOUT)
    } else {
        class
    }
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Only while the plain stream is being handed to the TLS handshake.
    Upgrading,
}

impl Transport {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf).await,
            Transport::Tls(s) => s.read(buf).await,
            Transport::Upgrading => Ok(0),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Plain(s) => write_flush(s, bytes).await,
            Transport::Tls(s) => write_flush(s.as_mut(), bytes).await,
            Transport::Upgrading => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Ends the connection: TLS sends its close_notify; a plain socket needs nothing before
    /// it is dropped (closing it sends the FIN, one system call fewer per connection).
    async fn shutdown(&mut self) {
        if let Transport::Tls(s) = self {
            let _ = s.shutdown().await;
        }
    }
}

async fn write_flush<S: AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    bytes: &[u8],
) -> std::io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await
}

/// The message being received.
struct Incoming {
    writer: SpoolWriter,
    transaction: Transaction,
    started: std::time::Instant,
    received: u64,
    failed: Option<std::io::Error>,
}

/// Serves one client until it leaves, times out, or the server shuts down.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let _active = shared.metrics.session_opened();
    let mut session = Session::new(
        shared.session_config.clone(),
        shared.policy.clone(),
        peer.ip(),
    );
    let mut transport = Transport::Plain(stream);
    // 16 KiB: one TLS record; idle connections stay small (see benches/server/memory.py).
    let mut buf = vec![0u8; 16 * 1024];
    let mut incoming: Option<Incoming> = None;
    let mut shutdown_seen = false;
    let mut stress = shared.stress.clone();
    let mut stress_follows = true;
    // When the session began waiting for its next input: a wait that a signal interrupts
    // (stress beginning, say) goes on from there rather than starting over.
    let mut waiting_since: Option<std::time::Instant> = None;
    loop {
        if let Err(e) = drive(&mut session, &mut transport, &mut incoming, &shared, peer).await {
            tracing::debug!(%peer, error = %e, "connection ended");
            break;
        }
        if session.is_closed() {
            break;
        }
        let Some(timeout) = session.timeout() else {
            continue;
        };
        let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
        let mut limit = timeout_for(timeout.duration(), *stress.borrow_and_update())
            .saturating_sub(since.elapsed());
        if let Some(msg) = &incoming {
            // Minimum data rate: after a minute's grace, the message so far must have come at
            // MIN_DATA_RATE or better, or the session times out.
            let allowed = std::time::Duration::from_secs(msg.received / MIN_DATA_RATE + 60);
            limit = limit.min(
                allowed
                    .saturating_sub(msg.started.elapsed())
                    .max(std::time::Duration::from_secs(1)),
            );
        }
        let read = tokio::select! {
            read = tokio::time::timeout(limit, transport.read(&mut buf)) => read,
            _ = shutdown.changed(), if !shutdown_seen => {
                shutdown_seen = true;
                session.shutdown();
                continue;
            }
            // The limit is worked out again, from the same start.
            changed = stress.changed(), if stress_follows => {
                stress_follows = changed.is_ok();
                continue;
            }
        };
        waiting_since = None;
        match read {
            Err(_) => session.on_timeout(),
            Ok(Ok(0)) | Ok(Err(_)) => {
                session.on_disconnect();
                let _ = drive(&mut session, &mut transport, &mut incoming, &shared, peer).await;
                break;
            }
            Ok(Ok(n)) => {
                session.set_storage_available(!shared.spool.low_on_space());
                let mut used = 0;
                while used < n {
                    used += session.feed(&buf[used..n]);
                    if used < n {
                        // The session holds pipelined input while a commit is pending.
                        if drive(&mut session, &mut transport, &mut incoming, &shared, peer)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
    }
    // A message cut off here leaves nothing behind: its writer is dropped with it.
    drop(incoming);
    transport.shutdown().await;
}

/// Handles the session's events and writes its output, until it has nothing more.
async fn drive(
    session: &mut Session,
    transport: &mut Transport,
    incoming: &mut Option<Incoming>,
    shared: &Shared,
    peer: SocketAddr,
) -> std::io::Result<()> {
    loop {
        let mut progressed = false;
        while let Some(event) = session.poll_event() {
            progressed = true;
            match event {
                Event::MessageStart(transaction) => {
                    // One left over from an aborted transaction is dropped, and with it any
                    // data file it had.
                    incoming.take();
                    // Before the spool counts this message as being received: the committer
                    // must not linger for a message that is only waiting here.
                    if let Some(pause) = shared.in_flow.delay() {
                        tokio::time::sleep(pause).await;
                    }
                    *incoming = Some(Incoming {
                        writer: shared.spool.begin(),
                        transaction: *transaction,
                        started: std::time::Instant::now(),
                        received: 0,
                        failed: None,
                    });
                }
                Event::MessageData(bytes) => {
                    if let Some(msg) = incoming.as_mut() {
                        msg.received += bytes.len() as u64;
                        if msg.failed.is_none()
                            && let Err(e) = msg.writer.write(&bytes)
                        {
                            msg.failed = Some(e);
                        }
                    }
                }
                Event::MessageComplete { size } => {
                    commit(session, incoming.take(), shared, peer, size).await
                }
                Event::MessageAborted(reason) => {
                    incoming.take();
                    if let Some(code) = reason.reply_code() {
                        shared.metrics.refused(code);
                    }
                    tracing::info!(%peer, ?reason, "message aborted");
                }
                Event::StartTls => {
                    transport.write_all(&session.take_output()).await?;
                    let Transport::Plain(tcp) = std::mem::replace(transport, Transport::Upgrading)
                    else {
                        return Err(std::io::Error::other("STARTTLS on a TLS transport"));
                    };
                    // The handshake runs on the raw socket: nothing buffered can leak into it.
                    let limit = timeout_for(
                        mailjournal::smtp::Timeout::TlsHandshake.duration(),
                        *shared.stress.borrow(),
                    );
                    let tls = tokio::time::timeout(limit, shared.tls.accept(tcp))
                        .await
                        .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
                    let (_, conn) = tls.get_ref();
                    let info = TlsInfo {
                        version: conn
                            .protocol_version()
                            .map_or("unknown".into(), |v| format!("{v:?}")),
                        cipher: conn
                            .negotiated_cipher_suite()
                            .map_or("unknown".into(), |c| format!("{:?}", c.suite())),
                    };
                    *transport = Transport::Tls(Box::new(tls));
                    session.tls_established(info);
                    shared.metrics.tls_established();
                }
                Event::Rejected(reply) => {
                    shared.metrics.refused(reply.code);
                    let enhanced = reply.enhanced.map(|e| e.to_string()).unwrap_or_default();
                    tracing::info!(%peer, code = reply.code, %enhanced, reply = %reply.lines.join(" "), "rejected");
                }
                Event::AuthFailure { failures } => {
                    tracing::warn!(%peer, failures, "authentication failed");
                    // Slow down guessing: one second per failure before the reply.
                    tokio::time::sleep(std::time::Duration::from_secs(u64::from(failures))).await;
                }
                Event::Close => {}
            }
        }
        if session.has_output() {
            transport.write_all(&session.take_output()).await?;
            progressed = true;
        }
        if !progressed {
            return Ok(());
        }
    }
}

async fn commit(
    session: &mut Session,
    incoming: Option<Incoming>,
    shared: &Shared,
    peer: SocketAddr,
    size: u64,
) {
    let Some(msg) = incoming else {
        return failed(session, shared);
    };
    if let Some(e) = &msg.failed {
        tracing::error!(%peer, error = %e, "spool write failed");
        return if mailjournal::spool::is_storage_full(e) {
            full(session, shared)
        } else {
            failed(session, shared)
        };
    }
    if shared.spool.low_on_space() {
        return full(session, shared);
    }
    let data_ended = std::time::Instant::now();
    let t = &msg.transaction;
    let journal_index = t.recipients.first().map(|r| r.journal);
    let journal = journal_index.and_then(|i| shared.policy.journals.get(i));
    let envelope = Envelope {
        received_at: SystemClock.now(),
        peer: t.peer.to_string(),
        helo: t.helo.clone(),
        tls_version: t.tls.as_ref().map(|i| i.version.clone()),
        tls_cipher: t.tls.as_ref().map(|i| i.cipher.clone()),
        authenticated: t.authenticated.clone(),
        mail_from: t.mail_from.clone(),
        recipients: t.recipients.iter().map(|r| r.address.clone()).collect(),
        // By identity: the spooled item keeps its definition whatever the configuration's
        // order at the next start.
        journal: journal.map(|j| j.service_address.to_string()),
    };
    let definition = journal.map(|j| j.definition.description.as_str());
    let tls = t.tls.as_ref().map(|i| i.version.clone());
    let id = msg.writer.id();
    match shared.spool.commit(msg.writer, envelope).await {
        Ok(_) => {
            session.committed(&id.to_string());
            shared.metrics.commit_observed(data_ended.elapsed());
            if let Some(index) = journal_index {
                shared.metrics.message_accepted(index, size);
            }
            tracing::info!(%peer, tls = tls.as_deref().unwrap_or("none"), definition = definition.unwrap_or(""), size, queue_id = %id, result = "queued", "transaction");
        }
        Err(CommitError::StorageFull) => {
            tracing::error!(%peer, "storage full");
            full(session, shared);
        }
        Err(e) => {
            tracing::error!(%peer, error = %e, source = ?std::error::Error::source(&e), "commit failed");
            failed(session, shared);
        }
    }
}

/// `452 4.3.1`, counted.
fn full(session: &mut Session, shared: &Shared) {
    shared.metrics.refused(452);
    session.storage_full();
}

/// `451 4.3.0`, counted.
fn failed(session: &mut Session, shared: &Shared) {
    shared.metrics.refused(451);
    session.commit_failed();
}
