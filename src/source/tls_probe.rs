//! What an administrator wants to know of the directory's TLS before trusting it (`check`):
//! the protocol, the server's certificate (subject, names, expiry) and the CA that verified it.
//! native-tls, which the real connections use, tells none of it but the certificate, so this
//! is a handshake of its own, with OpenSSL (which native-tls uses on Linux), with the same
//! trust: the system's roots plus `ldap.ca_file`, TLS 1.2 or newer, the URL's host checked.
//! It completes whatever the verdict, so that a certificate that fails is still described.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::{X509NameRef, X509Ref, X509VerifyResult, X509};

use crate::config::{LdapConfig, TlsMode};

/// Who vouched for the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trust {
    /// A certificate of `ldap.ca_file` (its subject).
    CaFile(String),
    /// A root of the system's trust store (its subject).
    System(String),
}

/// The outcome of the probe's handshake.
#[derive(Debug, Clone)]
pub(crate) struct TlsFacts {
    /// `TLSv1.3`, `TLSv1.2`.
    pub protocol: String,
    pub cipher: String,
    /// The server certificate's subject and issuer, as `CN=..., O=...`.
    pub subject: String,
    pub issuer: String,
    /// Its DNS names and IP addresses (subjectAltName).
    pub names: Vec<String>,
    /// Its expiry (`notAfter`, as OpenSSL prints it) and the whole days left until then
    /// (negative once expired).
    pub not_after: String,
    pub days_left: i32,
    /// Verified (chain and host name), by whom; or why not.
    pub verified: Result<Trust, String>,
}

/// Why there is no verdict.
#[derive(Debug, Clone)]
pub(crate) enum ProbeError {
    /// No connection to the server at all (the connection's own error says why).
    Unreachable,
    /// Connected, but no TLS was agreed (StartTLS refused, no handshake).
    NoTls(String),
}

/// Probes the TLS of `cfg`'s server: `None` for a plain connection.
pub(crate) async fn probe(cfg: &LdapConfig) -> Result<Option<TlsFacts>, ProbeError> {
    if cfg.tls == TlsMode::Plain {
        return Ok(None);
    }
    let tcp = super::ldap::connect_tcp(cfg)
        .await
        .map_err(|_| ProbeError::Unreachable)?;
    let tcp = match cfg.tls {
        TlsMode::StartTls => super::wire::start_tls_plain(cfg, tcp)
            .await
            .map_err(ProbeError::NoTls)?,
        _ => tcp,
    };
    let tcp = tcp
        .into_std()
        .map_err(|e| ProbeError::NoTls(e.to_string()))?;
    let host = url::Url::parse(&cfg.url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
        .unwrap_or_else(|| "localhost".into());
    let ca_file = cfg.ca_file.clone();
    let timeout = cfg.timeout;
    tokio::task::spawn_blocking(move || handshake(tcp, &host, ca_file.as_deref(), timeout))
        .await
        .map_err(|e| ProbeError::NoTls(format!("the TLS probe stopped: {e}")))?
        .map(Some)
        .map_err(ProbeError::NoTls)
}

fn handshake(
    tcp: std::net::TcpStream,
    host: &str,
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<TlsFacts, String> {
    tcp.set_nonblocking(false).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let ssl_err = |e: openssl::error::ErrorStack| format!("cannot set up TLS: {e}");
    // The system's roots (the builder loads them) and those of the CA file.
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(ssl_err)?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(ssl_err)?;
    let mut from_file = BTreeSet::new();
    if let Some(path) = ca_file {
        for block in crate::tls::pem_blocks(path)? {
            let cert = X509::from_pem(&block).map_err(|e| {
                format!(
                    "CA file {} holds an unreadable certificate: {e}",
                    path.display()
                )
            })?;
            from_file.insert(fingerprint(&cert));
            builder.cert_store_mut().add_cert(cert).map_err(ssl_err)?;
        }
    }
    // Every verdict is recorded and the handshake goes on: a certificate that fails is
    // described too, and the verdict read after.
    builder.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    let connector = builder.build();
    let config = connector.configure().map_err(ssl_err)?;
    let mut stream = config
        .connect(host, tcp)
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let ssl = stream.ssl();
    let cert = ssl
        .peer_certificate()
        .ok_or("the server sent no certificate")?;
    let verdict = ssl.verify_result();
    let verified = if verdict == X509VerifyResult::OK {
        let root = ssl
            .verified_chain()
            .and_then(|chain| chain.iter().last().map(|c| c.to_owned()));
        Ok(match root {
            Some(root) if from_file.contains(&fingerprint(&root)) => {
                Trust::CaFile(name_text(root.subject_name()))
            }
            Some(root) => Trust::System(name_text(root.subject_name())),
            None => Trust::System(String::new()),
        })
    } else {
        Err(verdict.error_string().to_string())
    };
    let now = Asn1Time::days_from_now(0).map_err(ssl_err)?;
    let days_left = now.diff(cert.not_after()).map(|d| d.days).unwrap_or(0);
    let facts = TlsFacts {
        protocol: ssl.version_str().to_string(),
        cipher: ssl
            .current_cipher()
            .map(|c| c.name().to_string())
            .unwrap_or_default(),
        subject: name_text(cert.subject_name()),
        issuer: name_text(cert.issuer_name()),
        names: alt_names(&cert),
        not_after: cert.not_after().to_string(),
        days_left,
        verified,
    };
    // A polite end; the server's answer does not matter.
    let _ = stream.shutdown();
    let _ = stream.get_mut().flush();
    let _ = stream.read(&mut [0u8; 1]);
    Ok(facts)
}

fn fingerprint(cert: &X509Ref) -> Vec<u8> {
    cert.digest(openssl::hash::MessageDigest::sha256())
        .map(|d| d.to_vec())
        .unwrap_or_default()
}

/// `CN=dc1.corp.example, O=Corp`: the most specific part first, as administrators read it.
fn name_text(name: &X509NameRef) -> String {
    let mut parts: Vec<String> = name
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = String::from_utf8_lossy(e.data().as_slice());
            format!("{key}={value}")
        })
        .collect();
    parts.reverse();
    parts.join(", ")
}

fn alt_names(cert: &X509Ref) -> Vec<String> {
    let Some(names) = cert.subject_alt_names() else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|n| {
            n.dnsname().map(str::to_string).or_else(|| {
                n.ipaddress().and_then(|ip| match ip.len() {
                    4 => <[u8; 4]>::try_from(ip)
                        .ok()
                        .map(|b| std::net::IpAddr::from(b).to_string()),
                    16 => <[u8; 16]>::try_from(ip)
                        .ok()
                        .map(|b| std::net::IpAddr::from(b).to_string()),
                    _ => None,
                })
            })
        })
        .collect()
}
