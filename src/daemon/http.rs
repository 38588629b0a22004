//! The status server: a deliberately small HTTP/1.1 server (GET only, one request per connection,
//! bounded request size, read and write time, and connections) for `/healthz`, `/readyz`,
//! `/metrics`, `/status` and the dashboard at `/`. With a token configured (required off
//! loopback), everything but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`:
//! the status page and the metrics name users and errors.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::Board;
use crate::config::Secret;

const MAX_REQUEST: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A client that does not take the answer within this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
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
                    if let Err(e) = handle(stream, &board, token.as_ref().as_ref()).await {
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

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
    }
}

/// Paths anyone who can connect may read: liveness and readiness say nothing about users.
fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// Whether the request's head carries `Authorization: Bearer <token>`, compared in constant time.
fn authorized(head: &str, token: &Secret) -> bool {
    use sha2::{Digest, Sha256};
    let given = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| {
            let v = v.trim();
            let (scheme, rest) = v.split_once(' ')?;
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

/// (status, content type, body) for a request line.
pub(super) fn route(board: &Board, method: &str, path: &str) -> (u16, &'static str, String) {
    if method != "GET" && method != "HEAD" {
        return (405, "text/plain", "only GET\n".into());
    }
    let path = path.split('?').next().unwrap_or("/");
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

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    board: &Board,
    token: Option<&Secret>,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(r) => r?,
        Err(_) => None,
    };
    let (status, ctype, body) = match head
        .as_deref()
        .and_then(|h| h.lines().next().map(|l| (h, l)))
    {
        Some((head, line)) => {
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("");
            let path = parts.next().unwrap_or("/");
            let bare = path.split('?').next().unwrap_or("/");
            match token {
                Some(t) if !is_open(bare) && !authorized(head, t) => (
                    401,
                    "text/plain",
                    "a bearer token is required (daemon.status_token)\n".to_string(),
                ),
                _ => route(board, method, path),
            }
        }
        None => (400, "text/plain", "bad request\n".to_string()),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head_only = head
        .as_deref()
        .map(|h| h.starts_with("HEAD "))
        .unwrap_or(false);
    let challenge = if status == 401 {
        "WWW-Authenticate: Bearer realm=\"dirbridge\"\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{challenge}\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        if !head_only {
            stream.write_all(body.as_bytes()).await?;
        }
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not take the answer in time",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> (tempfile::TempDir, Board) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = crate::state::Store::open(&dir.path().join("state"), 1 << 20)
            .unwrap_or_else(|e| panic!("{e}"));
        (dir, Board::new(Arc::new(store), Duration::from_secs(60)))
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
        let r = handle(server, &board, None).await;
        assert_eq!(r.map_err(|e| e.kind()), Err(std::io::ErrorKind::TimedOut));
        assert_eq!(started.elapsed(), WRITE_TIMEOUT);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_sends_no_request_is_dropped() {
        let (_dir, board) = board();
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let started = tokio::time::Instant::now();
        handle(server, &board, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(started.elapsed(), READ_TIMEOUT);
        let mut answer = String::new();
        client
            .read_to_string(&mut answer)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let t = Secret::new("s3cret-token");
        let head = |auth: &str| format!("GET /status HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n");
        assert!(authorized(&head("Authorization: Bearer s3cret-token"), &t));
        assert!(authorized(
            &head("authorization:   bearer   s3cret-token  "),
            &t
        ));
        assert!(!authorized(&head("Authorization: Bearer s3cret-toke"), &t));
        assert!(!authorized(
            &head("Authorization: Bearer s3cret-token2"),
            &t
        ));
        assert!(!authorized(&head("Authorization: Basic s3cret-token"), &t));
        assert!(!authorized(&head("X-Token: s3cret-token"), &t));
        assert!(!authorized(&head(""), &t));
        // The request line is not a header.
        assert!(!authorized(
            "Authorization: Bearer s3cret-token\r\n\r\n",
            &t
        ));
    }
}
