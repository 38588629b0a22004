//! Secrets (bind passwords, tokens) held in a type that never prints its value.

use std::fmt;
use std::path::Path;

use super::ConfigError;

/// A secret value. `Debug` prints a placeholder, there is no `Display` and no `Serialize`, so a
/// secret cannot reach a log line, an error message or `plan` output by accident; its memory is
/// wiped when it is dropped (secrecy).
#[derive(Clone)]
pub(crate) struct Secret(secrecy::SecretString);

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(secrecy::SecretString::from(value.into()))
    }

    /// The value, for the one place that must send it (a bind, an Authorization header).
    pub(crate) fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The error must not echo the value, so accept only a string and say so generically.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
        }
        d.deserialize_str(V)
    }
}

/// The most a secret file may hold: a password, a token or a key, not a device or a dump.
const SECRET_FILE_MAX: u64 = 64 * 1024;

/// Under systemd with `LoadCredential=NAME:...`, the service finds its credentials in
/// `$CREDENTIALS_DIRECTORY`: a secret file named by a bare name (`bind.pw`) is taken from there
/// when it is there, and from the config file's folder otherwise (the same config works for
/// the service and for an administrator running `check` by hand).
fn credential(file: &str) -> Option<std::path::PathBuf> {
    credential_in(std::env::var_os("CREDENTIALS_DIRECTORY").as_deref(), file)
}

fn credential_in(dir: Option<&std::ffi::OsStr>, file: &str) -> Option<std::path::PathBuf> {
    let name = Path::new(file);
    if name.components().count() != 1 || !name.is_relative() {
        return None;
    }
    let p = Path::new(dir?).join(name);
    p.is_file().then_some(p)
}

/// A secret file's text: a regular file (not a pipe, which would block, nor a device) of at
/// most [`SECRET_FILE_MAX`] bytes.
fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let cannot = |e: &dyn fmt::Display| format!("cannot read secret file {}: {e}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| cannot(&e))?;
    if !meta.is_file() {
        return Err(format!(
            "secret file {} is not a regular file",
            path.display()
        ));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(|e| cannot(&e))?
        .take(SECRET_FILE_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| cannot(&e))?;
    if text.len() as u64 > SECRET_FILE_MAX {
        return Err(format!(
            "secret file {} is larger than {} KiB: it cannot be a password or a token",
            path.display(),
            SECRET_FILE_MAX / 1024
        ));
    }
    Ok(text)
}

/// Where a secret may come from: inline, a file, or an environment variable. Exactly one.
#[derive(Debug, Default, Clone)]
pub(crate) struct SecretSource {
    pub inline: Option<Secret>,
    pub file: Option<String>,
    pub env: Option<String>,
}

impl SecretSource {
    /// Reads the secret. `key` is the config key it is named by (`ldap.bind_password`), used in
    /// errors; `base` is the config file's folder, against which a relative file is read.
    pub(crate) fn resolve(
        &self,
        config: &Path,
        key: &str,
        base: &Path,
    ) -> Result<Option<Secret>, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            path: config.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let count = [
            self.inline.is_some(),
            self.file.is_some(),
            self.env.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if count > 1 {
            return Err(invalid(format!(
                "set only one of `{key}`, `{key}_file` and `{key}_env`"
            )));
        }
        if let Some(s) = &self.inline {
            // An empty password makes an LDAP simple bind unauthenticated (RFC 4513 §5.1.2),
            // which many servers accept as anonymous: refused, like empty files and variables.
            if s.expose().is_empty() {
                return Err(invalid(format!("`{key}` is empty")));
            }
            return Ok(Some(s.clone()));
        }
        if let Some(file) = &self.file {
            let path = credential(file).unwrap_or_else(|| base.join(file));
            let text = read_secret_file(&path).map_err(invalid)?;
            let value = text.trim_end_matches(['\r', '\n']).to_string();
            if value.is_empty() {
                return Err(invalid(format!("secret file {} is empty", path.display())));
            }
            return Ok(Some(Secret::new(value)));
        }
        if let Some(var) = &self.env {
            return match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
                Ok(_) => Err(invalid(format!("environment variable {var} is empty"))),
                Err(_) => Err(invalid(format!("environment variable {var} is not set"))),
            };
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_is_a_small_regular_file_and_a_credential_comes_first() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("pw"), "s3cret\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_secret_file(&p("pw")).ok().as_deref(), Some("s3cret\n"));
        // A pipe would block the read until someone writes: refused at once.
        let fifo = p("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let err = read_secret_file(&fifo).unwrap_err();
            assert!(err.contains("not a regular file"), "{err}");
        }
        let err = read_secret_file(Path::new("/dev/zero")).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::write(p("big"), vec![b'a'; 70_000]).unwrap_or_else(|e| panic!("{e}"));
        let err = read_secret_file(&p("big")).unwrap_err();
        assert!(err.contains("larger than 64 KiB"), "{err}");
        // systemd's credentials: a bare name found there is taken from there.
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(creds.join("bind.pw"), "from systemd").unwrap_or_else(|e| panic!("{e}"));
        let from = |f: &str| credential_in(Some(creds.as_os_str()), f);
        assert_eq!(from("bind.pw"), Some(creds.join("bind.pw")));
        assert_eq!(
            from("other.pw"),
            None,
            "not a credential: the config's folder"
        );
        assert_eq!(from("sub/bind.pw"), None);
        assert_eq!(from("/etc/dirbridge/bind.pw"), None);
        assert_eq!(credential_in(None, "bind.pw"), None);
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn only_one_source_is_allowed() {
        let src = SecretSource {
            inline: Some(Secret::new("a")),
            env: Some("X".into()),
            file: None,
        };
        let err = src
            .resolve(Path::new("c.toml"), "ldap.bind_password", Path::new("."))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ldap.bind_password"), "{msg}");
        assert!(!msg.contains('a') || !msg.contains("\"a\""));
    }

    #[test]
    fn file_secret_is_trimmed_and_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let src = SecretSource {
            file: Some("pw".into()),
            ..Default::default()
        };
        let got = src
            .resolve(Path::new("c.toml"), "target.token", dir.path())
            .unwrap();
        assert_eq!(got.unwrap().expose(), "s3cret");
        let missing = SecretSource {
            file: Some("nope".into()),
            ..Default::default()
        };
        let msg = missing
            .resolve(Path::new("c.toml"), "target.token", dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("nope") && msg.contains("target.token"),
            "{msg}"
        );
    }
}
