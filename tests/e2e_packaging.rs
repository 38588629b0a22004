//! The container files, checked as far as a machine without a Docker engine allows
//! (`docker/lint.py`: hadolint, every path compose.yaml and the Dockerfiles name, the gateway's
//! build stage given a source tree cargo accepts, its config loading with this binary), and the
//! lint shown to catch what broke the image once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::repo;

fn lint(root: &Path) -> (bool, String) {
    let venv = repo().join(".venv/bin");
    let out = Command::new(venv.join("python"))
        .arg(repo().join("docker/lint.py"))
        .arg(root)
        .arg(env!("CARGO_BIN_EXE_dirbridge"))
        .arg(venv.join("hadolint"))
        .output()
        .expect("python in .venv: run scripts/setup.sh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// What the images copy and the compose file mounts, in a folder of their own.
fn copy_of_the_sources() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let copy = |rel: &str| {
        let (from, to): (PathBuf, PathBuf) = (repo().join(rel), dir.path().join(rel));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let status = Command::new("cp")
            .arg("-r")
            .arg(&from)
            .arg(&to)
            .status()
            .unwrap();
        assert!(status.success(), "cp {rel}");
    };
    for rel in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "benches",
        "certs",
        "docker",
        "demo/sample.ldif",
        "tests/fixtures/slapd.conf.template",
    ] {
        copy(rel);
    }
    dir
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn the_container_files_pass_the_lint() {
    let (ok, out) = lint(&repo());
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "ok");
}

#[test]
fn the_lint_catches_a_left_out_source_a_missing_mount_and_a_config_that_does_not_load() {
    // The image once left out benches/, which the manifest declares: the build failed.
    let src = copy_of_the_sources();
    edit(
        &src.path().join("docker/Dockerfile"),
        "COPY benches ./benches\n",
        "",
    );
    let (ok, out) = lint(src.path());
    assert!(!ok, "{out}");
    assert!(out.contains("not a source tree cargo accepts"), "{out}");
    assert!(out.contains("change_latency"), "{out}");

    let src = copy_of_the_sources();
    std::fs::remove_file(src.path().join("demo/sample.ldif")).unwrap();
    std::fs::remove_file(src.path().join("docker/compose/secrets/scim_token.txt")).unwrap();
    let (ok, out) = lint(src.path());
    assert!(!ok, "{out}");
    assert!(out.contains("COPY demo/sample.ldif: no such file"), "{out}");
    assert!(out.contains("secret scim_token"), "{out}");

    let src = copy_of_the_sources();
    edit(
        &src.path().join("docker/compose/dirbridge.toml"),
        "allow_plaintext = true\n",
        "",
    );
    let (ok, out) = lint(src.path());
    assert!(!ok, "{out}");
    assert!(
        out.contains("does not load") && out.contains("clear text"),
        "{out}"
    );

    // A Dockerfile hadolint refuses.
    let src = copy_of_the_sources();
    edit(
        &src.path().join("docker/scim/Dockerfile"),
        "RUN pip install",
        "RUN cd /tmp && pip install",
    );
    let (ok, out) = lint(src.path());
    assert!(!ok, "{out}");
    assert!(out.contains("hadolint") && out.contains("DL"), "{out}");
}
