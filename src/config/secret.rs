//! Secrets (bind passwords, tokens) held in a type that never prints its value.

use std::fmt;
use std::path::Path;

use super::ConfigError;

/// A secret value. `Debug` prints a placeholder, there is no `Display` and no `Serialize`, so a
/// secret cannot reach a log line, an error message or `plan` output by accident.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it (a bind, an Authorization header).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

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
            let path = base.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid(format!("cannot read secret file {}: {e}", path.display())))?;
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
