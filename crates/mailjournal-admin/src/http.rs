//! The admin listener: hyper's HTTP/1.1 server connection on the receiver's tokio, with
//! the routes matched by hand (six of them: a router framework would add a dependency tree
//! for nothing).
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 when the engine can take mail, 503 with the reason otherwise |
//! | `GET /metrics` | the Prometheus / OpenMetrics text |
//! | `GET /` | the journaling page |
//! | `GET /item/ID` | one item's page |
//! | `POST /login` | the page's token form: sets a cookie, back to `/` |

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use mailjournal::engine::Readiness;
use mailjournal::queue::ItemId;
use mailjournal::spool::{Clock, SystemClock};
use mailjournal::status::{ArchiveSource, StatusReport};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::{Metrics, page};

/// Items the journaling page lists, newest first.
pub const PAGE_ITEMS: usize = 50;
/// The cookie the page's token form sets.
pub const COOKIE: &str = "mailjournal_admin";
/// The longest a client may take to send its request head (slow clients hold a task).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once; more wait in the listen queue. The SMTP listener
/// shares the process's descriptors: a flood of scrapes or page loads must not take them.
pub const MAX_CONNECTIONS: usize = 32;

/// What the admin listener serves.
#[derive(Debug)]
pub struct Admin {
    /// Where the archive is read (as `status` reads it).
    pub source: Arc<ArchiveSource>,
    /// The receiver's metrics.
    pub metrics: Arc<Metrics>,
    /// Whether its engine can take mail.
    pub readiness: Readiness,
    /// The bearer token, when one is configured.
    pub token: Option<String>,
}

impl Admin {
    /// Whether `request` carries the token (always, when none is configured).
    fn authorized<B>(&self, request: &Request<B>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let headers = request.headers();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='));
        bearer
            .into_iter()
            .chain(cookie)
            .any(|given| same_secret(given.as_bytes(), token.as_bytes()))
    }
}

/// Compares without stopping at the first difference, so that the time taken does not tell
/// how much of a guess was right.
fn same_secret(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len() && given.iter().zip(token).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

/// Serves `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = shutdown.changed() => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admin = admin.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&admin, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                // One request a connection: an idle browser connection must not hold a slot.
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    answer(status, "text/plain; charset=utf-8", body)
}

fn html(status: StatusCode, body: String) -> Answer {
    let mut response = answer(status, "text/html; charset=utf-8", body);
    // The page runs no script and embeds nothing from elsewhere.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ),
    );
    response
}

/// Reads the status as `status` would, off the runtime's threads (SQLite and the spool's
/// directory are read).
async fn read_status(admin: &Admin, limit: usize) -> Result<StatusReport, String> {
    let source = admin.source.clone();
    tokio::task::spawn_blocking(move || source.status(limit, SystemClock.now()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

async fn route(admin: &Admin, request: Request<Incoming>) -> Answer {
    let path = request.uri().path().to_owned();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => match admin.readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        (&Method::GET, "/metrics") => {
            let report = read_status(admin, 1).await;
            if let Err(e) = &report {
                tracing::warn!(error = %e, "admin: status not read for /metrics");
            }
            answer(
                StatusCode::OK,
                crate::metrics::CONTENT_TYPE,
                admin.metrics.encode(report.as_ref().ok()),
            )
        }
        (&Method::GET, "/") => match read_status(admin, PAGE_ITEMS).await {
            Ok(report) => html(
                StatusCode::OK,
                page::index(&report, admin.authorized(&request)),
            ),
            Err(e) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the archive cannot be read: {e}\n"),
            ),
        },
        (&Method::GET, p) if p.starts_with("/item/") => {
            item_page(admin, &p["/item/".len()..], admin.authorized(&request)).await
        }
        (&Method::POST, "/login") => login(admin, request).await,
        (_, "/healthz" | "/readyz" | "/metrics" | "/" | "/login") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn item_page(admin: &Admin, id: &str, details: bool) -> Answer {
    let Ok(id) = id.parse::<ItemId>() else {
        return text(StatusCode::NOT_FOUND, "not a queue id\n");
    };
    let source = admin.source.clone();
    let read = tokio::task::spawn_blocking(move || {
        source.read(|archive| {
            let Some(row) = archive.item(id)? else {
                return Ok(None);
            };
            let message = if details { archive.message(id)? } else { None };
            Ok(Some((row, message)))
        })
    })
    .await;
    match read {
        Ok(Ok(Some((row, message)))) => {
            html(StatusCode::OK, page::item(&row, message.as_ref(), details))
        }
        Ok(Ok(None)) => text(StatusCode::NOT_FOUND, format!("unknown id {id}\n")),
        Ok(Err(e)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the archive cannot be read: {e}\n"),
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// The form's `token=...` (application/x-www-form-urlencoded): right, a cookie and back to
/// the page; wrong, 403.
async fn login(admin: &Admin, request: Request<Incoming>) -> Answer {
    let Some(token) = &admin.token else {
        return see_other(None);
    };
    let body = match Limited::new(request.into_body(), 4096).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "form too large\n"),
    };
    let given = body
        .split(|&b| b == b'&')
        .find_map(|pair| pair.strip_prefix(b"token="))
        .map(form_decode)
        .unwrap_or_default();
    if same_secret(&given, token.as_bytes()) {
        see_other(Some(token))
    } else {
        tracing::warn!("admin: wrong token given to the page's form");
        text(StatusCode::FORBIDDEN, "wrong token\n")
    }
}

fn see_other(token: Option<&str>) -> Answer {
    let mut response = text(StatusCode::SEE_OTHER, "");
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/"));
    if let Some(cookie) = token.and_then(|t| {
        HeaderValue::try_from(format!("{COOKIE}={t}; HttpOnly; SameSite=Strict; Path=/")).ok()
    }) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `+` and `%XX` of a form field.
fn form_decode(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        match field[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < field.len() => {
                let hex = std::str::from_utf8(&field[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(form_decode(b"a+b%2Fc%zz%4"), b"a b/c%zz%4");
        assert_eq!(form_decode(b"%41"), b"A");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"s3creT", b"s3cret"));
    }
}
