//! The status server: a deliberately small HTTP/1.1 server (GET only, one request per connection,
//! bounded request size and time) for `/healthz`, `/readyz`, `/metrics`, `/status` and the
//! dashboard at `/`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Board;

const MAX_REQUEST: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, board: Arc<Board>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let board = board.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &board).await {
                        tracing::debug!(error = %e, "status request failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "status server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
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

/// (status, content type, body) for a request line.
pub fn route(board: &Board, method: &str, path: &str) -> (u16, &'static str, String) {
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
        "/metrics" => (200, "text/plain; version=0.0.4", board.metrics()),
        "/status" => (200, "application/json", board.json()),
        "/" => (200, "text/html; charset=utf-8", board.html()),
        _ => (404, "text/plain", "not found\n".into()),
    }
}

async fn handle(mut stream: TcpStream, board: &Board) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(r) => r?,
        Err(_) => None,
    };
    let (status, ctype, body) = match head.as_deref().and_then(|h| h.lines().next()) {
        Some(line) => {
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("");
            let path = parts.next().unwrap_or("/");
            route(board, method, path)
        }
        None => (400, "text/plain", "bad request\n".to_string()),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head_only = head
        .as_deref()
        .map(|h| h.starts_with("HEAD "))
        .unwrap_or(false);
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}
