//! The HTTP side every target client shares: the TLS set-up, authorization on each attempt,
//! retries of what may be retried, a bounded answer body, a request budget. What an error
//! answer means is the protocol's business ([`ErrorShape`]).

use reqwest::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::auth::{Auth, Headers};
use super::retry::{self, Failure, Pacer};
use super::{TargetError, TargetErrorKind};
use crate::config::TargetConfig;

/// Longest error detail kept from a target answer.
pub(crate) const MAX_DETAIL: usize = 500;

/// A request body, already encoded: shared, not copied, by each attempt to send it.
pub(crate) struct Body {
    pub content_type: &'static str,
    pub bytes: bytes::Bytes,
}

impl Body {
    pub(crate) fn json(v: &Value, content_type: &'static str) -> Result<Body, String> {
        // Room for a user resource at once (grown from nothing, the buffer was copied ~5 times).
        let mut out = Vec::with_capacity(512);
        serde_json::to_writer(&mut out, v)
            .map_err(|e| format!("the request body could not be encoded: {e}"))?;
        Ok(Body {
            content_type,
            bytes: out.into(),
        })
    }
}

/// One request: `label` (method and path, never a query or a credential) names it in errors.
pub(crate) struct Outgoing<'a> {
    pub method: Method,
    pub url: url::Url,
    pub headers: &'a [(HeaderName, HeaderValue)],
    pub body: Option<&'a Body>,
    pub label: &'a str,
}

/// How a protocol reads an answer.
pub(crate) trait ErrorShape: Sync {
    /// The error an answer with a failing status means.
    fn http_error(&self, status: StatusCode, body: &[u8]) -> TargetErrorKind;
    /// Whether a status is a success for this request (2xx by default).
    fn is_success(&self, status: StatusCode) -> bool {
        status.is_success()
    }
    /// A successful status whose body still says it failed (`{"status": "ERROR"}`).
    fn body_error(&self, _status: StatusCode, _doc: &Value) -> Option<TargetErrorKind> {
        None
    }
}

/// The connection to a target: one per client.
pub(crate) struct HttpCore {
    http: reqwest::Client,
    /// What the protocol answers in, asked for unless a request names it itself.
    accept: HeaderValue,
    auth: Auth,
    retries: u32,
    max_body: usize,
    pacer: Option<Pacer>,
}

impl std::fmt::Debug for HttpCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCore")
            .field("auth", &self.auth)
            .finish()
    }
}

impl HttpCore {
    /// `accept` is what the protocol answers in.
    pub(crate) fn new(cfg: &TargetConfig, accept: &'static str) -> Result<HttpCore, String> {
        // One client for the target and its token endpoint: setting up TLS (the system's CA
        // roots) costs ~45 ms of every command's start, once per client.
        let http = client(cfg)?;
        let auth = Auth::new(&cfg.auth, http.clone())?;
        Ok(HttpCore {
            http,
            accept: HeaderValue::from_static(accept),
            auth,
            retries: cfg.retries,
            max_body: cfg.max_response_bytes,
            pacer: cfg.rate_limit.map(Pacer::new),
        })
    }

    /// Sends a request, retrying what may be retried (see [`retry::retryable`]) up to
    /// `target.retries` times, and returns the JSON body (`Value::Null` for an empty one). A
    /// 401 with a token that can be renewed renews it and sends once more.
    pub(crate) async fn call(
        &self,
        req: &Outgoing<'_>,
        shape: &dyn ErrorShape,
    ) -> Result<Value, TargetError> {
        self.call_retried(req, shape)
            .await
            .map_err(|e| self.auth.scrub_error(e))
    }

    async fn call_retried(
        &self,
        req: &Outgoing<'_>,
        shape: &dyn ErrorShape,
    ) -> Result<Value, TargetError> {
        let mut attempt = 0u32;
        let mut renewed = false;
        loop {
            if let Some(p) = &self.pacer {
                p.wait().await;
            }
            let (auth, generation) = match self.auth.headers().await {
                Ok(a) => a,
                // The token endpoint did not answer (or answered 429 / 5xx): waited for and
                // asked again like any request; a refusal of the credentials is final.
                Err(e) if e.is_transport() || e.kind == TargetErrorKind::Timeout => {
                    attempt += 1;
                    if attempt > self.retries {
                        return Err(e);
                    }
                    let wait = retry::delay(attempt, None);
                    tracing::warn!(request = req.label, error = %self.auth.scrub_error(e.clone()), attempt, retry_in = ?wait, "no access token; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (error, failure, retry_after) = match self.call_once(req, shape, &auth).await {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            if failure == Failure::Status(401) && !renewed && self.auth.renew(generation).await {
                renewed = true;
                tracing::info!(
                    request = req.label,
                    "target refused the access token; a new one was fetched"
                );
                continue;
            }
            attempt += 1;
            let too_long = retry_after.is_some_and(|d| d > retry::LONGEST_RETRY_AFTER);
            if !retry::retryable(&req.method, failure) && failure == Failure::Unanswered {
                // A POST whose answer was lost: one object's problem, not the target's.
                let kind = match error.kind {
                    TargetErrorKind::Transport(m) | TargetErrorKind::BadResponse(m) => {
                        TargetErrorKind::Lost(m)
                    }
                    TargetErrorKind::Timeout => TargetErrorKind::Lost("no answer in time".into()),
                    other => other,
                };
                return Err(TargetError {
                    request: error.request,
                    kind,
                });
            }
            if attempt > self.retries || too_long || !retry::retryable(&req.method, failure) {
                return Err(error);
            }
            let wait = retry::delay(attempt, retry_after);
            tracing::warn!(request = req.label, error = %self.auth.scrub_error(error.clone()), attempt, retry_in = ?wait, "target request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// What the next request carries to be let in.
    pub(crate) async fn auth_headers(&self) -> Result<Headers, TargetError> {
        match self.auth.headers().await {
            Ok((h, _)) => Ok(h),
            Err(e) => Err(self.auth.scrub_error(e)),
        }
    }

    /// One attempt: the body, or the error with what retrying needs to know.
    pub(crate) async fn call_once(
        &self,
        req: &Outgoing<'_>,
        shape: &dyn ErrorShape,
        auth: &Headers,
    ) -> Result<Value, (TargetError, Failure, Option<std::time::Duration>)> {
        let err = |kind| TargetError {
            request: req.label.to_string(),
            kind,
        };
        let mut r = self.http.request(req.method.clone(), req.url.clone());
        if !auth
            .iter()
            .chain(req.headers)
            .any(|(name, _)| name == ACCEPT)
        {
            r = r.header(ACCEPT, self.accept.clone());
        }
        for (name, value) in auth.iter().chain(req.headers) {
            r = r.header(name, value);
        }
        if let Some(b) = req.body {
            r = r.header(CONTENT_TYPE, b.content_type).body(b.bytes.clone());
        }
        let resp = r.send().await.map_err(|e| {
            let f = if e.is_connect() {
                Failure::NotSent
            } else {
                Failure::Unanswered
            };
            (err(transport_kind(&e)), f, None)
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, time::OffsetDateTime::now_utc()));
        // Read in chunks, and never more than target.max_response_kib: a server's answer cannot
        // make the gateway hold an unbounded body.
        let mut resp = resp;
        // An answer in one chunk (most) is read where it arrived, not copied.
        let mut first: Option<bytes::Bytes> = None;
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    let held = first.as_ref().map_or(0, bytes::Bytes::len);
                    if held + bytes.len() + c.len() > self.max_body {
                        return Err((
                            err(TargetErrorKind::BadResponse(format!(
                                "an answer larger than target.max_response_kib ({} KiB)",
                                self.max_body / 1024
                            ))),
                            // Not resent: the same request would bring the same answer.
                            Failure::Status(0),
                            None,
                        ));
                    }
                    if first.is_none() && bytes.is_empty() {
                        first = Some(c);
                    } else {
                        if let Some(f) = first.take() {
                            bytes.extend_from_slice(&f);
                        }
                        bytes.extend_from_slice(&c);
                    }
                }
                Ok(None) => break,
                Err(e) => return Err((err(transport_kind(&e)), Failure::Unanswered, None)),
            }
        }
        let bytes: &[u8] = first.as_deref().unwrap_or(&bytes);
        if !shape.is_success(status) {
            return Err((
                err(shape.http_error(status, bytes)),
                Failure::Status(status.as_u16()),
                retry_after,
            ));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| {
            (
                err(TargetErrorKind::BadResponse(format!(
                    "HTTP {} with a body that is not JSON ({e})",
                    status.as_u16()
                ))),
                // A success whose body broke on the way (truncated): carried out, answer lost.
                Failure::Unanswered,
                None,
            )
        })?;
        if let Some(kind) = shape.body_error(status, &doc) {
            // The target said no in a success's clothing: not resent, like any refusal.
            return Err((err(kind), Failure::Status(status.as_u16()), None));
        }
        Ok(doc)
    }
}

/// The HTTP client a target's settings describe (TLS, timeouts, no redirects).
fn client(cfg: &TargetConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .tls_backend_native()
        .user_agent(concat!("dirbridge/", env!("CARGO_PKG_VERSION")))
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(std::time::Duration::from_secs(10)))
        .tcp_keepalive(std::time::Duration::from_secs(30))
        .tls_version_min(reqwest::tls::Version::TLS_1_2)
        // A redirect would carry the credentials to wherever the answer points.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &cfg.ca_file {
        for block in crate::tls::pem_blocks(ca)? {
            let cert = reqwest::Certificate::from_pem(&block).map_err(|e| {
                format!(
                    "CA file {} holds an unreadable certificate: {e}",
                    ca.display()
                )
            })?;
            builder = builder.add_root_certificate(cert);
        }
    }
    if !cfg.tls_verify {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

pub(crate) fn transport_kind(e: &reqwest::Error) -> TargetErrorKind {
    if e.is_timeout() {
        return TargetErrorKind::Timeout;
    }
    // The error chain holds the useful part (connection refused, certificate unknown, ...);
    // reqwest errors carry the URL, whose query may hold the values looked up: removed.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    TargetErrorKind::Transport(without_query(msg, e.url()))
}

/// A target's error message as kept: no control characters, at most [`MAX_DETAIL`] characters.
pub(crate) fn clean_detail(d: &str) -> String {
    let mut out: String = d
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DETAIL)
        .collect();
    if out.len() >= MAX_DETAIL {
        out.push('…');
    }
    out
}

/// The body of an error answer as text, when it is not a document the protocol reads.
pub(crate) fn body_text(body: &[u8]) -> Option<String> {
    let t = String::from_utf8_lossy(body).trim().to_string();
    (!t.is_empty()).then(|| clean_detail(&t))
}

/// An error text without the request's query: a look-up's query holds a userName or a key,
/// which have no place in logs and `status` (the method and path say which request it was).
fn without_query(msg: String, url: Option<&url::Url>) -> String {
    match url {
        Some(u) if u.query().is_some() => {
            let mut bare = u.clone();
            bare.set_query(None);
            msg.replace(u.as_str(), bare.as_str())
        }
        _ => msg,
    }
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn error_texts_carry_no_query() {
        let u = url::Url::parse("http://idp.example.com/v2/Users?filter=userName+eq+%22ann%22")
            .unwrap();
        let msg = format!("error sending request for url ({u}): connection reset");
        let out = without_query(msg, Some(&u));
        assert_eq!(
            out,
            "error sending request for url (http://idp.example.com/v2/Users): connection reset"
        );
    }
}

#[cfg(test)]
mod answer_tests {
    //! Answers read whole whatever pieces they arrive in, and refused past the limit.

    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    /// A server answering every request with `doc`, chunked, `pieces` chunks each flushed on
    /// its own (so the client reads them one by one).
    fn chunked(doc: &'static str, pieces: usize) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut out = conn;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
                let size = doc.len().div_ceil(pieces);
                for part in doc.as_bytes().chunks(size) {
                    out.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                        .unwrap();
                    out.write_all(part).unwrap();
                    out.write_all(b"\r\n").unwrap();
                    out.flush().unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                out.write_all(b"0\r\n\r\n").unwrap();
            }
        });
        port
    }

    struct Plain;
    impl ErrorShape for Plain {
        fn http_error(&self, status: StatusCode, _body: &[u8]) -> TargetErrorKind {
            TargetErrorKind::Http {
                status: status.as_u16(),
                code: None,
                detail: None,
            }
        }
    }

    async fn get(port: u16, limit_kib: u32) -> Result<Value, TargetError> {
        let text = format!(
            "[ldap]\nurl = \"ldap://127.0.0.1:3890\"\nbind_dn = \"cn=a\"\nbind_password = \"pw\"\n\
             base_dn = \"dc=x\"\n[target]\nkind = \"scim\"\nurl = \"http://127.0.0.1:{port}/scim\"\n\
             token = \"t\"\nretries = 0\nmax_response_kib = {limit_kib}\n"
        );
        let cfg = Config::parse(&text, Path::new("/tmp/c.toml")).unwrap();
        let core = HttpCore::new(&cfg.target, "application/json").unwrap();
        let req = Outgoing {
            method: Method::GET,
            url: url::Url::parse(&format!("http://127.0.0.1:{port}/scim/Users/1")).unwrap(),
            headers: &[],
            body: None,
            label: "GET /Users/1",
        };
        core.call(&req, &Plain).await
    }

    const DOC: &str = r#"{"id":"1","userName":"ann","title":"a title long enough to be cut in pieces, and a little more"}"#;

    #[tokio::test]
    async fn an_answer_in_one_piece_or_many_reads_the_same() {
        let whole: Value = serde_json::from_str(DOC).unwrap();
        for pieces in [1, 2, 7] {
            let got = get(chunked(DOC, pieces), 64).await.unwrap();
            assert_eq!(got, whole, "{pieces} pieces");
        }
    }

    #[tokio::test]
    async fn an_answer_past_the_limit_is_refused_however_it_arrives() {
        let big: &'static str =
            Box::leak(format!(r#"{{"id":"1","pad":"{}"}}"#, "x".repeat(3000)).into_boxed_str());
        for pieces in [1, 5] {
            let e = get(chunked(big, pieces), 2).await.unwrap_err();
            assert!(
                e.to_string()
                    .contains("larger than target.max_response_kib (2 KiB)"),
                "{pieces}: {e}"
            );
            // Under the limit, the same answer reads whole.
            assert!(get(chunked(big, pieces), 4).await.is_ok());
        }
    }
}
