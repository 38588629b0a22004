//! Trust roots from a PEM file (the corporate CA placed in `certs/`), shared by the LDAP and the
//! HTTP clients.

use std::path::Path;

/// Each certificate of a PEM file, as its own PEM block. A file may hold a whole chain.
pub(crate) fn pem_blocks(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if line == "-----BEGIN CERTIFICATE-----" {
            current = Some(String::from(line) + "\n");
        } else if line == "-----END CERTIFICATE-----" {
            if let Some(mut block) = current.take() {
                block.push_str(line);
                block.push('\n');
                blocks.push(block.into_bytes());
            }
        } else if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    if blocks.is_empty() {
        return Err(format!(
            "CA file {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(blocks)
}

/// A native-tls connector that trusts the system roots plus those of `ca_file`, speaks TLS 1.2 or
/// newer, and checks certificates unless `verify` is false.
pub(crate) fn native_connector(
    ca_file: Option<&Path>,
    verify: bool,
) -> Result<native_tls::TlsConnector, String> {
    let mut builder = native_tls::TlsConnector::builder();
    builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    if let Some(path) = ca_file {
        for block in pem_blocks(path)? {
            let cert = native_tls::Certificate::from_pem(&block).map_err(|e| {
                format!(
                    "CA file {} holds an unreadable certificate: {e}",
                    path.display()
                )
            })?;
            builder.add_root_certificate(cert);
        }
    }
    if !verify {
        builder.danger_accept_invalid_certs(true);
        builder.danger_accept_invalid_hostnames(true);
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up TLS: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a cert").unwrap();
        let err = pem_blocks(&p).unwrap_err();
        assert!(err.contains("ca.pem"), "{err}");
    }

    #[test]
    fn every_block_of_a_bundle_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bundle.pem");
        std::fs::write(
            &p,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\njunk\n-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert_eq!(pem_blocks(&p).unwrap().len(), 2);
    }
}
