//! A real 389 Directory Server (Debian `389-ds-base`): created once per test process into a
//! template by `fixtures/ds389/make-instance.py` (lib389, without systemd), with MemberOf,
//! referential integrity, Retro Changelog and Content Synchronization enabled; then copied per
//! test and started in the foreground on its own port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{free_port, repo, run_with_input, try_wait_for_port, Guard, BASE_DN};

pub const DS_ADMIN: &str = "cn=Directory Manager";
pub const DS_PW: &str = "Ds389-s3cret-pw";
const INSTANCE: &str = "etc/dirsrv/slapd-dirbridge";

/// Where the template was made, and the port it was made with (both are written in its files).
struct Template {
    root: PathBuf,
    port: u16,
}

fn ns_slapd(root: &Path) -> Command {
    let mut cmd = Command::new("/usr/sbin/ns-slapd");
    cmd.arg("-D")
        .arg(root.join(INSTANCE))
        .arg("-i")
        .arg(root.join("ns-slapd.pid"))
        .args(["-d", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn modify(port: u16, ldif: &str) {
    let mut cmd = Command::new("ldapmodify");
    cmd.args([
        "-x",
        "-H",
        &format!("ldap://127.0.0.1:{port}"),
        "-D",
        DS_ADMIN,
        "-w",
        DS_PW,
    ]);
    let out = run_with_input(cmd, ldif);
    assert!(
        out.status.success(),
        "ldapmodify on 389-DS failed: {}\n{ldif}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops a foreground ns-slapd cleanly (SIGTERM) and waits for it.
fn terminate(child: &mut Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let root = tempfile::Builder::new()
            .prefix("dirbridge-389-tpl")
            .tempdir()
            .unwrap()
            .keep();
        let port = free_port();
        let out = Command::new("/usr/bin/python3")
            .arg(repo().join("tests/fixtures/ds389/make-instance.py"))
            .arg(&root)
            .arg(port.to_string())
            .arg(DS_PW)
            .output()
            .expect(
                "python3: install Debian's 389-ds-base and python3-lib389 (scripts/setup.sh does)",
            );
        assert!(
            out.status.success(),
            "389-DS instance creation failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = ns_slapd(&root).spawn().expect("ns-slapd");
        try_wait_for_port(port, "389-DS", &mut child).unwrap();
        let plugins =
            std::fs::read_to_string(repo().join("tests/fixtures/ds389/plugins.ldif")).unwrap();
        modify(port, &plugins);
        terminate(&mut child);
        Template { root, port }
    })
}

/// Joins LDIF continuation lines (a path may be folded anywhere).
fn unfold(ldif: &str) -> String {
    let mut out = String::with_capacity(ldif.len());
    for line in ldif.lines() {
        match line.strip_prefix(' ') {
            Some(rest) if !out.is_empty() => {
                out.pop(); // the newline of the line it continues
                out.push_str(rest);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let kind = e.file_type().unwrap();
        let dest = to.join(e.file_name());
        if kind.is_dir() {
            copy_tree(&e.path(), &dest);
        } else if kind.is_file() {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A running 389 Directory Server with the base fixture loaded.
pub struct Ds389 {
    child: Guard,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Ds389 {
    pub fn start() -> Ds389 {
        let t = template();
        let dir = tempfile::Builder::new()
            .prefix("dirbridge-389")
            .tempdir()
            .unwrap();
        copy_tree(&t.root, dir.path());
        let port = free_port();
        let dse = dir.path().join(INSTANCE).join("dse.ldif");
        let text = unfold(&std::fs::read_to_string(&dse).unwrap())
            .replace(
                &t.root.display().to_string(),
                &dir.path().display().to_string(),
            )
            .replace(
                &format!("nsslapd-port: {}\n", t.port),
                &format!("nsslapd-port: {port}\n"),
            );
        std::fs::write(&dse, text).unwrap();
        let mut ds = Ds389 {
            child: Guard(Ds389::spawn(dir.path(), port)),
            dir,
            port,
        };
        // The instance was created with its suffix entry: the fixture's others.
        let base = std::fs::read_to_string(repo().join("tests/fixtures/base.ldif")).unwrap();
        let rest: Vec<&str> = base
            .split("\n\n")
            .filter(|b| !b.trim().is_empty() && !b.starts_with(&format!("dn: {BASE_DN}\n")))
            .collect();
        ds.add(&rest.join("\n\n"));
        ds
    }

    fn spawn(root: &Path, port: u16) -> Child {
        let mut child = ns_slapd(root).spawn().expect("ns-slapd");
        if let Err(e) = try_wait_for_port(port, "389-DS", &mut child) {
            panic!("{e}");
        }
        child
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Applies LDIF with ldapmodify (`changetype` lines decide add / modify / delete).
    pub fn modify(&self, ldif: &str) {
        modify(self.port, ldif);
    }

    pub fn add(&mut self, ldif: &str) {
        let mut cmd = Command::new("ldapadd");
        cmd.args(["-x", "-H", &self.url(), "-D", DS_ADMIN, "-w", DS_PW]);
        let out = run_with_input(cmd, ldif);
        assert!(
            out.status.success(),
            "ldapadd on 389-DS failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn delete(&self, dn: &str) {
        self.modify(&format!("dn: {dn}\nchangetype: delete\n"));
    }

    /// Kills the server without warning (SIGKILL).
    pub fn kill(&mut self) {
        self.child.stop();
    }

    /// Starts the server again on the same port and data, after [`Ds389::kill`].
    pub fn restart(&mut self) {
        self.child.stop();
        // A killed server leaves its pid file; ns-slapd refuses to start over a live one only.
        let _ = std::fs::remove_file(self.dir.path().join("ns-slapd.pid"));
        self.child = Guard(Ds389::spawn(self.dir.path(), self.port));
    }

    /// The ldap settings of a gateway reading this server.
    pub fn ldap_settings(&self) -> String {
        format!(
            "bind_dn = \"{DS_ADMIN}\"\nbase_dn = \"{BASE_DN}\"\n\
             user_filter = \"(objectClass=inetOrgPerson)\"\npage_size = 2\n"
        )
    }
}
