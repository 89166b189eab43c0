//! Delivery of pending alerts: one HTTP/1.1 POST each (hyper's client connection over a
//! tokio socket, rustls for `https://`), in order per webhook, with backoff while a webhook
//! fails. A webhook that fails holds back only its own alerts.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use mailjournal::definition::WebhookUrl;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::alert::{Outbox, Pending};

/// The first wait after a failed attempt; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The longest one attempt (connect, TLS, request, response) may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The configured URL is not one (`check-config` refuses it; a pending alert may
    /// predate a change).
    #[error("not a webhook URL: {0}")]
    Url(#[from] mailjournal::definition::WebhookUrlError),
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    /// The host name is not one a certificate can name.
    #[error("TLS: {0}")]
    ServerName(#[from] rustls::pki_types::InvalidDnsNameError),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The webhook answered, but not with a 2xx.
    #[error("the webhook answered {0}")]
    Status(hyper::StatusCode),
    /// No answer within [`ATTEMPT_TIMEOUT`].
    #[error("no answer within {ATTEMPT_TIMEOUT:?}")]
    Timeout,
}

/// POSTs `body` (JSON) to `url`; `Ok` when it answered 2xx.
pub async fn post(
    url: &str,
    body: Bytes,
    tls: &tokio_rustls::TlsConnector,
) -> Result<(), DeliveryError> {
    let url: WebhookUrl = url.parse()?;
    tokio::time::timeout(ATTEMPT_TIMEOUT, exchange(&url, body, tls))
        .await
        .map_err(|_| DeliveryError::Timeout)?
}

async fn exchange(
    url: &WebhookUrl,
    body: Bytes,
    tls: &tokio_rustls::TlsConnector,
) -> Result<(), DeliveryError> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(DeliveryError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let authority = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let request = hyper::Request::post(url.path.as_str())
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("mailjournal/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))?;
    let status = if url.tls {
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())?;
        let stream = tls.connect(name, tcp).await.map_err(DeliveryError::Tls)?;
        send(TokioIo::new(stream), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    if status.is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Status(status))
    }
}

async fn send<IO>(
    io: IO,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::StatusCode, DeliveryError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let connection = tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status();
    // Read the answer to its end so that the connection closes cleanly.
    let _ = response.into_body().collect().await;
    drop(sender);
    let _ = connection.await;
    Ok(status)
}

/// A TLS connector trusting the Web PKI's roots (webpki-roots), plus `extra` (a private
/// CA's certificates, DER).
pub fn tls_connector(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for certificate in extra {
        roots.add(certificate.clone())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// One webhook's queue.
#[derive(Debug, Default)]
struct Line {
    queue: VecDeque<Pending>,
    failures: u32,
    next_attempt: Option<Instant>,
}

/// Delivers what the outbox holds and whatever arrives on `incoming`, until `incoming`
/// closes and nothing is left that could be delivered now.
pub async fn run(
    outbox: Arc<std::sync::Mutex<Outbox>>,
    pending: Vec<Pending>,
    mut incoming: mpsc::UnboundedReceiver<Vec<Pending>>,
    tls: tokio_rustls::TlsConnector,
) {
    let mut lines: BTreeMap<String, Line> = BTreeMap::new();
    let add = |lines: &mut BTreeMap<String, Line>, batch: Vec<Pending>| {
        for p in batch {
            lines
                .entry(p.webhook_url.clone())
                .or_default()
                .queue
                .push_back(p);
        }
    };
    add(&mut lines, pending);
    let mut open = true;
    loop {
        let now = Instant::now();
        let mut soonest: Option<Instant> = None;
        for (url, line) in &mut lines {
            while let Some(head) = line.queue.front() {
                if line.next_attempt.is_some_and(|at| at > now) {
                    break;
                }
                let body = match serde_json::to_vec(&head.alert) {
                    Ok(body) => Bytes::from(body),
                    Err(_) => {
                        line.queue.pop_front();
                        continue;
                    }
                };
                match post(url, body, &tls).await {
                    Ok(()) => {
                        tracing::info!(webhook = %url, alert = %head.alert.id, "alert delivered");
                        let seq = head.seq;
                        let outbox = outbox.clone();
                        let removed = tokio::task::spawn_blocking(move || {
                            outbox
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .delivered(seq)
                        })
                        .await;
                        if let Ok(Err(e)) = removed {
                            tracing::warn!(error = %e, "a delivered alert could not be removed: it will be sent again at the next start");
                        }
                        line.queue.pop_front();
                        line.failures = 0;
                        line.next_attempt = None;
                    }
                    Err(e) => {
                        let wait = FIRST_BACKOFF
                            .saturating_mul(1 << line.failures.min(16))
                            .min(MAX_BACKOFF);
                        line.failures += 1;
                        tracing::warn!(webhook = %url, alert = %head.alert.id, error = %e, attempts = line.failures, retry_in = ?wait, "alert not delivered");
                        line.next_attempt = Some(Instant::now() + wait);
                        break;
                    }
                }
            }
            if !line.queue.is_empty() {
                let at = line.next_attempt.unwrap_or(now);
                soonest = Some(soonest.map_or(at, |s| s.min(at)));
            }
        }
        if !open && soonest.is_none() {
            return;
        }
        let sleep = async {
            match soonest {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            batch = incoming.recv(), if open => match batch {
                Some(batch) => add(&mut lines, batch),
                None => open = false,
            },
            () = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers one request on `listener` with `code`, over TLS when `tls` is given; the
    /// request as received.
    async fn answer_once(
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        code: u16,
    ) -> std::io::Result<String> {
        async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
            mut s: S,
            code: u16,
        ) -> std::io::Result<String> {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Head and the body the client announced.
            loop {
                let n = s.read(&mut buf).await?;
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_owned)
                        })
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            s.write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .await?;
            s.shutdown().await?;
            Ok(String::from_utf8_lossy(&request).into_owned())
        }
        let (tcp, _) = listener.accept().await?;
        match tls {
            Some(acceptor) => exchange(acceptor.accept(tcp).await?, code).await,
            None => exchange(tcp, code).await,
        }
    }

    #[tokio::test]
    async fn https_webhooks_are_verified_and_any_non_2xx_is_a_failure() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = certified.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));

        // Trusted: delivered, with the document as the body.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = tokio::spawn(answer_once(listener, Some(acceptor.clone()), 204));
        let trusting = tls_connector(&[cert]).unwrap();
        let url = format!("https://localhost:{port}/hook?k=1");
        post(&url, Bytes::from_static(b"{\"a\":1}"), &trusting)
            .await
            .unwrap();
        let request = served.await.unwrap().unwrap();
        assert!(
            request.starts_with("POST /hook?k=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains(&format!("host: localhost:{port}\r\n")),
            "{request}"
        );
        assert!(request.ends_with("\r\n\r\n{\"a\":1}"), "{request}");

        // A certificate the Web PKI does not vouch for: refused before anything is sent.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = tokio::spawn(answer_once(listener, Some(acceptor), 204));
        let public_only = tls_connector(&[]).unwrap();
        let url = format!("https://localhost:{port}/hook");
        let refused = post(&url, Bytes::new(), &public_only).await;
        assert!(matches!(refused, Err(DeliveryError::Tls(_))), "{refused:?}");
        assert!(served.await.unwrap().is_err());

        // Answered, but not 2xx.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = tokio::spawn(answer_once(listener, None, 503));
        let url = format!("http://127.0.0.1:{port}/hook");
        let failed = post(&url, Bytes::new(), &public_only).await;
        assert!(
            matches!(failed, Err(DeliveryError::Status(s)) if s.as_u16() == 503),
            "{failed:?}"
        );
        served.await.unwrap().unwrap();
    }
}
