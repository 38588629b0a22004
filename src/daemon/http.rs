//! The status server: hyper's HTTP/1.1 server, GET only, one request per connection, bounded
//! request size (8 KiB of head), time (5 s for the request's head, 15 s for the whole
//! connection) and connections (64), for `/healthz`, `/readyz`, `/metrics`, `/status` and the
//! dashboard at `/`. With a token configured (required off loopback), everything but
//! `/healthz` and `/readyz` needs `Authorization: Bearer <token>`: the status page and the
//! metrics name users and errors.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::Board;
use crate::config::Secret;

/// The most a request's head may take (hyper's smallest read buffer).
const MAX_REQUEST: usize = 8 * 1024;
/// A request's head must arrive within this long.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long, whatever the client does (a client that does not
/// take the answer is dropped).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections served at once; more are closed at once (a scraper and a few people need few).
pub(super) const MAX_CONNECTIONS: usize = 64;

pub(super) async fn serve(listener: TcpListener, board: Arc<Board>, token: Option<Secret>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let token = Arc::new(token);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "status server: {MAX_CONNECTIONS} connections open; this one is closed");
                    drop(stream);
                    continue;
                };
                let (board, token) = (board.clone(), token.clone());
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, board, token).await {
                        tracing::debug!(error = %e, "status request failed");
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "status server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one connection (one request), within [`CONNECTION_TIMEOUT`].
async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    board: Arc<Board>,
    token: Arc<Option<Secret>>,
) -> std::io::Result<()> {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let response = respond(&board, token.as_ref().as_ref(), &req);
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
        Ok(r) => r.map_err(std::io::Error::other),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not take the answer in time",
        )),
    }
}

/// Paths anyone who can connect may read: liveness and readiness say nothing about users.
fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// Whether an `Authorization` value is `Bearer <token>`, compared in constant time.
fn authorized(value: Option<&HeaderValue>, token: &Secret) -> bool {
    use sha2::{Digest, Sha256};
    let given = value.and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    let Some(given) = given else { return false };
    // Equal digests, compared without an early exit: the time taken says nothing of the token.
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(token.expose().as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// (status, content type, body) for a method and a path.
pub(super) fn route(board: &Board, method: &Method, path: &str) -> (u16, &'static str, String) {
    if method != Method::GET && method != Method::HEAD {
        return (405, "text/plain", "only GET\n".into());
    }
    match path {
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/readyz" => match board.ready() {
            (true, r) => (200, "text/plain", format!("{r}\n")),
            (false, r) => (503, "text/plain", format!("{r}\n")),
        },
        "/metrics" => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            board.metrics(),
        ),
        "/status" => (200, "application/json", board.json()),
        "/" => (200, "text/html; charset=utf-8", board.html()),
        _ => (404, "text/plain", "not found\n".into()),
    }
}

fn respond<B>(board: &Board, token: Option<&Secret>, req: &Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let (status, ctype, body) = match token {
        Some(t) if !is_open(path) && !authorized(req.headers().get(header::AUTHORIZATION), t) => (
            401,
            "text/plain",
            "a bearer token is required (daemon.status_token)\n".to_string(),
        ),
        _ => route(board, req.method(), path),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if status == 401 {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"dirbridge\""),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn board() -> (tempfile::TempDir, Arc<Board>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = crate::state::Store::open(&dir.path().join("state"), 1 << 20)
            .unwrap_or_else(|e| panic!("{e}"));
        (
            dir,
            Arc::new(Board::new(Arc::new(store), Duration::from_secs(60))),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_take_the_answer_is_dropped() {
        let (_dir, board) = board();
        // A 64-byte pipe the client never reads: the answer cannot be written whole.
        let (server, mut client) = tokio::io::duplex(64);
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let started = tokio::time::Instant::now();
        let r = connection(server, board, Arc::new(None)).await;
        assert_eq!(r.map_err(|e| e.kind()), Err(std::io::ErrorKind::TimedOut));
        assert_eq!(started.elapsed(), CONNECTION_TIMEOUT);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_sends_no_request_is_dropped() {
        let (_dir, board) = board();
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let started = tokio::time::Instant::now();
        let r = connection(server, board, Arc::new(None)).await;
        assert!(r.is_err(), "{r:?}");
        assert_eq!(started.elapsed(), READ_TIMEOUT);
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        // Closed, whatever hyper wrote before closing: the connection is not kept.
        assert!(answer.len() < 200, "{}", String::from_utf8_lossy(&answer));
    }

    #[tokio::test]
    async fn a_request_is_answered_once_and_the_head_is_bounded() {
        let (_dir, board) = board();
        let (server, mut client) = tokio::io::duplex(256 * 1024);
        let task = tokio::spawn(connection(server, board.clone(), Arc::new(None)));
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut answer = String::new();
        client
            .read_to_string(&mut answer)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        assert!(answer.ends_with("ok\n"), "{answer}");
        let _ = task.await;
        // A head larger than the bound is refused, not read on.
        let (server, mut client) = tokio::io::duplex(256 * 1024);
        let task = tokio::spawn(connection(server, board, Arc::new(None)));
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Fill: {}\r\n\r\n",
            "a".repeat(3 * MAX_REQUEST)
        );
        let _ = client.write_all(big.as_bytes()).await;
        let mut answer = String::new();
        let _ = client.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        let _ = task.await;
    }

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let t = Secret::new("s3cret-token");
        let check = |v: &str| authorized(HeaderValue::from_str(v).ok().as_ref(), &t);
        assert!(check("Bearer s3cret-token"));
        assert!(check("  bearer   s3cret-token  "));
        assert!(!check("Bearer s3cret-toke"));
        assert!(!check("Bearer s3cret-token2"));
        assert!(!check("Basic s3cret-token"));
        assert!(!check(""));
        assert!(!authorized(None, &t));
    }
}
