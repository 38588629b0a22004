//! `dirbridge init`: a commented starter configuration for a directory flavour and a target,
//! with its secret files beside it, created empty and owner-only (0600) for the administrator
//! to fill. Nothing that exists is overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StarterProfile {
    /// OpenLDAP (or another RFC 4519 directory): inetOrgPerson, groupOfNames, memberOf.
    Openldap,
    /// Active Directory.
    Ad,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StarterTarget {
    /// A SCIM 2.0 provider (miniOrange's SCIM Client app, or any other).
    Scim,
    /// An in-house REST API, an event per thing the gateway does, OAuth 2.0 credentials.
    Rest,
    /// miniOrange's admin REST API.
    Miniorange,
}

/// The starter text and the secret files it names.
pub(crate) fn starter(
    profile: StarterProfile,
    target: StarterTarget,
    config: &Path,
) -> (String, Vec<&'static str>) {
    let (ldap, profile_name) = match profile {
        StarterProfile::Openldap => (include_str!("starter/ldap-openldap.toml"), "openldap"),
        StarterProfile::Ad => (include_str!("starter/ldap-ad.toml"), "ad"),
    };
    let (target_text, target_name, secret) = match target {
        StarterTarget::Scim => (
            include_str!("starter/target-scim.toml"),
            "scim",
            "scim.token",
        ),
        StarterTarget::Rest => (
            include_str!("starter/target-rest.toml"),
            "rest",
            "client.secret",
        ),
        StarterTarget::Miniorange => (
            include_str!("starter/target-miniorange.toml"),
            "miniorange",
            "miniorange.key",
        ),
    };
    let head = include_str!("starter/head.toml")
        .replace("{profile}", profile_name)
        .replace("{target}", target_name)
        .replace("{config}", &config.display().to_string());
    let mut tail = include_str!("starter/tail.toml").to_string();
    // A config in /etc is a service's: its state goes where the unit's StateDirectory is.
    if config.starts_with("/etc") {
        tail = tail.replace("path = \"state\"", "path = \"/var/lib/dirbridge\"");
    }
    let text = format!("{head}{ldap}{target_text}{tail}");
    (text, vec!["bind.pw", secret])
}

/// Writes the starter and its empty secret files; refuses if any of them exists (a dangling
/// link included). Either every file is written, or none is left behind. Returns what was
/// written.
pub(crate) fn write(
    profile: StarterProfile,
    target: StarterTarget,
    config: &Path,
) -> Result<Vec<PathBuf>, String> {
    let folder = match config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (text, secrets) = starter(profile, target, config);
    let secret_paths: Vec<PathBuf> = secrets.iter().map(|s| folder.join(s)).collect();
    if secret_paths
        .iter()
        .any(|p| p.file_name() == config.file_name())
    {
        return Err(format!(
            "{} is the name of a secret file the starter uses: choose another --config",
            config.display()
        ));
    }
    for p in std::iter::once(config).chain(secret_paths.iter().map(PathBuf::as_path)) {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(format!(
                "{} exists: init writes only new files (move it aside, or choose another --config)",
                p.display()
            ));
        }
    }
    // Folders readable by all (the service's user reads the config), writable by the owner
    // only, whatever the umask.
    let mut folders = std::fs::DirBuilder::new();
    folders.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut folders, 0o755);
    folders
        .create(&folder)
        .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    let mut written = Vec::new();
    // The config holds no secret: readable by the service's user (systemd's DynamicUser).
    let files = std::iter::once((config.to_path_buf(), 0o644, text.into_bytes()))
        .chain(secret_paths.into_iter().map(|p| (p, 0o600, Vec::new())));
    for (path, mode, content) in files {
        if let Err(e) = create(&path, mode, &content) {
            // Another init, or a file made meanwhile: what this one wrote goes.
            for w in &written {
                let _ = std::fs::remove_file(w);
            }
            return Err(e);
        }
        written.push(path);
    }
    Ok(written)
}

/// Creates `path` (never over an existing file) with `mode` and `content`.
fn create(path: &Path, mode: u32, content: &[u8]) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(content)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILES: [StarterProfile; 2] = [StarterProfile::Openldap, StarterProfile::Ad];
    const TARGETS: [StarterTarget; 3] = [
        StarterTarget::Scim,
        StarterTarget::Rest,
        StarterTarget::Miniorange,
    ];

    #[test]
    fn every_starter_is_a_valid_configuration_once_its_secrets_are_filled() {
        for profile in PROFILES {
            for target in TARGETS {
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                let config = dir.path().join("etc").join("dirbridge.toml");
                let written = write(profile, target, &config).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(written.len(), 3, "{written:?}");
                let text = std::fs::read_to_string(&config).unwrap_or_default();
                // Empty secret files are refused by name: what to fill is said.
                let err = crate::config::Config::load(&config)
                    .map(|_| ())
                    .expect_err("empty secrets must not load");
                assert!(err.to_string().contains("is empty"), "{err}");
                for p in &written[1..] {
                    std::fs::write(p, "s3cret\n").unwrap_or_else(|e| panic!("{e}"));
                }
                let cfg = crate::config::Config::load(&config)
                    .unwrap_or_else(|e| panic!("{profile:?} {target:?}: {e}\n{text}"));
                assert_eq!(
                    cfg.ldap.profile == crate::config::Profile::ActiveDirectory,
                    profile == StarterProfile::Ad
                );
                assert!(text.contains(&format!("--config {} check", config.display())));
            }
        }
    }

    #[test]
    fn a_config_in_etc_keeps_its_state_where_the_unit_does() {
        let etc = starter(
            StarterProfile::Ad,
            StarterTarget::Scim,
            Path::new("/etc/dirbridge/dirbridge.toml"),
        )
        .0;
        assert!(etc.contains("path = \"/var/lib/dirbridge\""), "{etc}");
        let here = starter(StarterProfile::Ad, StarterTarget::Scim, Path::new("d.toml")).0;
        assert!(here.contains("path = \"state\""), "{here}");
        // Secrets by bare name: from systemd's credentials under the unit, from the config's
        // folder by hand.
        assert!(etc.contains("bind_password_file = \"bind.pw\""), "{etc}");
        let unit = include_str!("../../packaging/dirbridge.service");
        assert!(unit.contains("LoadCredential=bind.pw:/etc/dirbridge/bind.pw"));
        assert!(unit.contains("LoadCredential=scim.token:/etc/dirbridge/scim.token"));
        assert!(unit.contains("StateDirectory=dirbridge"));
    }

    #[cfg(unix)]
    #[test]
    fn secrets_are_owner_only_and_nothing_is_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config = dir.path().join("dirbridge.toml");
        let written = write(StarterProfile::Ad, StarterTarget::Scim, &config)
            .unwrap_or_else(|e| panic!("{e}"));
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0)
        };
        assert_eq!(mode(&written[1]), 0o600);
        assert_eq!(mode(&written[2]), 0o600);
        assert_eq!(
            mode(&config),
            0o644,
            "no secret in it: the service's user reads it"
        );
        // Again: refused, and the first config is untouched.
        std::fs::write(&written[1], "pw\n").unwrap_or_else(|e| panic!("{e}"));
        let err = write(StarterProfile::Openldap, StarterTarget::Rest, &config)
            .expect_err("an existing config must not be overwritten");
        assert!(err.contains("dirbridge.toml exists"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&written[1]).ok().as_deref(),
            Some("pw\n")
        );
        // A secret file in the way is refused too, before anything is written.
        let other = dir.path().join("other.toml");
        let err = write(StarterProfile::Openldap, StarterTarget::Scim, &other)
            .expect_err("an existing secret file must not be overwritten");
        assert!(err.contains("bind.pw exists"), "{err}");
        assert!(!other.exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_failure_leaves_nothing_behind_and_links_are_never_written_through() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // A dangling link where a secret file goes: refused before anything is written.
        std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("scim.token"))
            .unwrap_or_else(|e| panic!("{e}"));
        let config = dir.path().join("d.toml");
        let err = write(StarterProfile::Openldap, StarterTarget::Scim, &config)
            .expect_err("a dangling link is in the way");
        assert!(err.contains("scim.token exists"), "{err}");
        assert!(std::fs::symlink_metadata(&config).is_err());
        assert!(std::fs::symlink_metadata(dir.path().join("bind.pw")).is_err());
        assert!(std::fs::symlink_metadata(dir.path().join("nowhere")).is_err());
        // The config named as a secret file.
        let err = write(
            StarterProfile::Openldap,
            StarterTarget::Rest,
            &dir.path().join("bind.pw"),
        )
        .expect_err("the config cannot be a secret file");
        assert!(err.contains("name of a secret file"), "{err}");
        assert!(std::fs::symlink_metadata(dir.path().join("bind.pw")).is_err());
        // Missing folders are made readable by all, writable by the owner, whatever the umask.
        let deep = dir.path().join("a").join("b").join("d.toml");
        write(StarterProfile::Ad, StarterTarget::Miniorange, &deep)
            .unwrap_or_else(|e| panic!("{e}"));
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0)
        };
        assert_eq!(mode(&dir.path().join("a")) & 0o022, 0);
        assert_eq!(mode(&dir.path().join("a").join("b")) & 0o022, 0);
    }
}
