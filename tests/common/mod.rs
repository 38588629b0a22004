//! Test harness: a real slapd and a real SCIM server (PyPI scim2-server) on free loopback ports,
//! a config file pointing the dirbridge binary at both, and small clients to check the result.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BASE_DN: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PW: &str = "Adm1n-s3cret-pw";
pub const TOKEN: &str = "scim-t0ken-very-secret";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    if let Err(e) = try_wait_for_port(port, what, child) {
        panic!("{e}");
    }
}

/// Waits for a child to listen on `port`; an error when it exits first (e.g. the port, free a
/// moment ago, was taken by another test in between).
pub(crate) fn try_wait_for_port(port: u16, what: &str, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        // Listening, and the listener is this child's (not another test's server that took
        // the port first: this child then exits, and another port is tried).
        if TcpStream::connect(("127.0.0.1", port)).is_ok()
            && listener::owned_by(port, child.id()) != Some(false)
        {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{what} exited before listening on {port}: {status}"
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!(
        "{what} did not listen on 127.0.0.1:{port} within 20s"
    ))
}

/// Starts a server on a free port; a port free when picked may be taken by another test before
/// the server binds it, so on an early exit another port is tried (bounded).
fn on_a_free_port(what: &str, mut spawn: impl FnMut(u16) -> Child) -> (Child, u16) {
    let mut attempt = 0;
    loop {
        let port = free_port();
        let mut child = spawn(port);
        match try_wait_for_port(port, what, &mut child) {
            Ok(()) => return (child, port),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                attempt += 1;
                assert!(attempt < 5, "{e}");
                eprintln!("{e}; trying another port");
            }
        }
    }
}

pub mod bad_ldap;
pub mod ds389;
pub mod faults;
mod listener;
pub mod proxy;
pub mod rest;
pub mod samba;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A CA and a server certificate for 127.0.0.1, made once per test process with openssl.
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub other_ca: PathBuf,
}

pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("dirbridge-certs")
            .tempdir()
            .unwrap()
            .keep();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=dirbridge test CA",
        ]);
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other-ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=unrelated CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        Certs {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            other_ca: dir.join("other-ca.pem"),
            dir,
        }
    })
}

/// Runs a command with `input` on its standard input. The input is written from another thread:
/// a tool that answers as it reads (ldapadd prints a line per entry) would otherwise fill its
/// output pipe and wait for us while we wait for it.
pub fn run_with_input(mut cmd: Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (install ldap-utils)"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// GET on a local HTTP server: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Polls `check` every 100 ms until it is true or `secs` seconds have passed.
pub fn wait_until(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// A child process killed (and reaped) when dropped, so a failing test leaks no server.
/// Sends SIGTERM and waits (bounded) for the process to exit.
/// Waits up to `secs` for a child to exit by itself.
pub fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let mut status = None;
    assert!(
        wait_until(secs, || {
            status = child.try_wait().unwrap();
            status.is_some()
        }),
        "still running after {secs}s"
    );
    status.unwrap()
}

pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut status = None;
    assert!(wait_until(20, || {
        status = child.try_wait().unwrap();
        status.is_some()
    }));
    status.unwrap()
}

pub struct Guard(pub Child);

impl Guard {
    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real slapd with the memberof and syncprov overlays, listening on ldap:// and ldaps://.
pub struct Slapd {
    child: Guard,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub ldaps_port: u16,
}

/// Where slapd's syncprov overlay is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Syncprov {
    OnTheDatabase,
    None,
    LoadedOnly,
}

impl Slapd {
    pub fn start() -> Slapd {
        Slapd::start_with(Syncprov::OnTheDatabase)
    }

    /// slapd without the syncprov overlay: no content synchronization on offer.
    pub fn start_without_syncprov() -> Slapd {
        Slapd::start_with(Syncprov::None)
    }

    /// slapd with the syncprov module loaded (the root DSE lists the sync control) but the
    /// overlay on no database: every content synchronization search is refused.
    pub fn start_with_syncprov_unused() -> Slapd {
        Slapd::start_with(Syncprov::LoadedOnly)
    }

    /// slapd keeping `member` values right on renames with the refint overlay alone: no memberof
    /// overlay, so users carry no memberOf (memberships come from the groups' `member`).
    pub fn start_with_refint_only() -> Slapd {
        Slapd::start_flavour(Syncprov::OnTheDatabase, true)
    }

    /// Two slapd in multi-provider replication: each a syncrepl consumer of the other
    /// (serverIDs 1 and 2, `multiprovider on`), both offering content synchronization, without
    /// the memberof overlay (its memberOf values do not replicate; a change feed reads the
    /// groups' `member` values). What is written to one reaches the other within a second.
    pub fn start_pair() -> (Slapd, Slapd) {
        let c = certs();
        let ports = [(free_port(), free_port()), (free_port(), free_port())];
        let template =
            std::fs::read_to_string(repo().join("tests/fixtures/slapd.conf.template")).unwrap();
        let mut pair = Vec::new();
        for i in 0..2 {
            let dir = tempfile::Builder::new()
                .prefix("dirbridge-slapd")
                .tempdir()
                .unwrap();
            std::fs::create_dir(dir.path().join("db")).unwrap();
            let replication = format!(
                "syncrepl rid=00{rid} provider=ldap://127.0.0.1:{other} bindmethod=simple \
                 binddn=\"{ADMIN_DN}\" credentials={ADMIN_PW} searchbase=\"{BASE_DN}\" \
                 type=refreshAndPersist retry=\"1 +\" timeout=3\nmultiprovider on",
                rid = i + 1,
                other = ports[1 - i].0
            );
            let conf: Vec<String> = template
                .replace("@DIR@", &dir.path().display().to_string())
                .replace("@CA@", &c.ca.display().to_string())
                .replace("@CERT@", &c.cert.display().to_string())
                .replace("@KEY@", &c.key.display().to_string())
                .replace("@ROOTPW@", ADMIN_PW)
                .lines()
                .filter(|l| !l.contains("memberof"))
                .map(|l| match l {
                    "database mdb" => format!("serverID {}\n{l}", i + 1),
                    "index entryCSN eq" => format!("{l}\n{replication}"),
                    _ => l.to_string(),
                })
                .collect();
            std::fs::write(dir.path().join("slapd.conf"), conf.join("\n")).unwrap();
            let (port, ldaps_port) = ports[i];
            let child = Slapd::spawn(dir.path(), port, ldaps_port);
            pair.push(Slapd {
                child: Guard(child),
                dir,
                port,
                ldaps_port,
            });
        }
        let b = pair.pop().unwrap();
        let a = pair.pop().unwrap();
        (a, b)
    }

    fn start_with(syncprov: Syncprov) -> Slapd {
        Slapd::start_flavour(syncprov, false)
    }

    fn start_flavour(syncprov: Syncprov, refint_only: bool) -> Slapd {
        let c = certs();
        let dir = tempfile::Builder::new()
            .prefix("dirbridge-slapd")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let template =
            std::fs::read_to_string(repo().join("tests/fixtures/slapd.conf.template")).unwrap();
        let conf = template
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@CA@", &c.ca.display().to_string())
            .replace("@CERT@", &c.cert.display().to_string())
            .replace("@KEY@", &c.key.display().to_string())
            .replace("@ROOTPW@", ADMIN_PW);
        let conf = match syncprov {
            Syncprov::OnTheDatabase => conf,
            Syncprov::None => conf
                .lines()
                .filter(|l| !l.contains("syncprov"))
                .collect::<Vec<_>>()
                .join("\n"),
            Syncprov::LoadedOnly => conf
                .lines()
                .filter(|l| !l.starts_with("overlay syncprov") && !l.starts_with("syncprov-"))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        let conf = if refint_only {
            conf.lines()
                .filter(|l| !l.contains("memberof"))
                .map(|l| {
                    if l.starts_with("overlay syncprov") {
                        format!("overlay refint\nrefint_attributes member\n{l}")
                    } else if l == "moduleload syncprov" {
                        format!("moduleload refint\n{l}")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            conf
        };
        std::fs::write(dir.path().join("slapd.conf"), conf).unwrap();
        // A port free when picked may be taken by another test before slapd binds it: pick
        // others and try again (bounded).
        let mut attempt = 0;
        let (child, port, ldaps_port) = loop {
            let (port, ldaps_port) = (free_port(), free_port());
            match Slapd::try_spawn(dir.path(), port, ldaps_port) {
                Ok(child) => break (child, port, ldaps_port),
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    eprintln!("{e}; trying other ports");
                }
                Err(e) => panic!("{e}"),
            }
        };
        Slapd {
            child: Guard(child),
            dir,
            port,
            ldaps_port,
        }
    }

    fn spawn(dir: &Path, port: u16, ldaps_port: u16) -> Child {
        Slapd::try_spawn(dir, port, ldaps_port).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_spawn(dir: &Path, port: u16, ldaps_port: u16) -> Result<Child, String> {
        let mut child = Command::new(slapd_binary())
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{ldaps_port}/"
            ))
            .arg("-d")
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("slapd.log"))
                    .unwrap(),
            ))
            .spawn()
            .expect("slapd: install the Debian slapd package (.ci/run does)");
        let ready = try_wait_for_port(port, "slapd", &mut child)
            .and_then(|()| try_wait_for_port(ldaps_port, "slapd (ldaps)", &mut child));
        if let Err(e) = ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(child)
    }

    /// Kills slapd without warning (SIGKILL): no clean shutdown, no goodbye to clients.
    pub fn kill(&mut self) {
        self.child.stop();
    }

    /// Starts slapd again on the same ports and data, after [`Slapd::kill`].
    pub fn restart(&mut self) {
        self.child.stop();
        self.child = Guard(Slapd::spawn(self.dir.path(), self.port, self.ldaps_port));
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    fn tool(&self, tool: &str, args: &[&str], input: &str) {
        let mut cmd = Command::new(tool);
        cmd.args(["-x", "-H", &self.url(), "-D", ADMIN_DN, "-w", ADMIN_PW])
            .args(args);
        let out = run_with_input(cmd, input);
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}\n{input}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Applies LDIF with ldapmodify (`changetype` lines decide add / modify / delete).
    pub fn modify(&self, ldif: &str) {
        self.tool("ldapmodify", &[], ldif);
    }

    pub fn add(&self, ldif: &str) {
        self.tool("ldapadd", &[], ldif);
    }

    pub fn load(&self, fixture: &str) {
        let text = std::fs::read_to_string(repo().join("tests/fixtures").join(fixture)).unwrap();
        self.add(&text);
    }

    pub fn delete(&self, dn: &str) {
        self.tool("ldapdelete", &[dn], "");
    }

    pub fn stop(&mut self) {
        self.child.stop();
    }
}

fn slapd_binary() -> PathBuf {
    for p in ["/usr/sbin/slapd", "/usr/local/libexec/slapd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("slapd")
}

fn scim_binary() -> PathBuf {
    if let Ok(p) = std::env::var("DIRBRIDGE_SCIM_SERVER") {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin/scim2-server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("scim2-server")
}

/// Which real SCIM server a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimKind {
    /// PyPI scim2-server, in memory.
    Scim2Server,
    /// django-scim2 with its default adapters, on sqlite (tests/fixtures/scim_django).
    Django,
}

/// A real SCIM 2.0 server with a bearer token.
pub struct Scim {
    child: Guard,
    pub port: u16,
    pub kind: ScimKind,
    /// The django server's database folder.
    _dir: Option<tempfile::TempDir>,
}

fn venv_python() -> PathBuf {
    let venv = repo().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// A migrated django database, made once per test process and copied for each server.
fn django_template() -> &'static PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("dirbridge-django-tpl")
            .tempdir()
            .unwrap()
            .keep();
        let db = dir.join("template.sqlite3");
        let out = Command::new(venv_python())
            .arg(repo().join("tests/fixtures/scim_django/serve.py"))
            .args(["migrate-only", db.to_str().unwrap()])
            .output()
            .expect("python: run scripts/setup.sh");
        assert!(
            out.status.success(),
            "django template: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        db
    })
}

impl Scim {
    pub fn start() -> Scim {
        Scim::start_with(&[])
    }

    /// The server named by `DIRBRIDGE_TEST_SCIM` (`django`), else scim2-server.
    pub fn start_default() -> Scim {
        match std::env::var("DIRBRIDGE_TEST_SCIM").as_deref() {
            Ok("django") => Scim::start_django(),
            _ => Scim::start(),
        }
    }

    /// django-scim2 on its own copy of a migrated database.
    pub fn start_django() -> Scim {
        let dir = tempfile::Builder::new()
            .prefix("dirbridge-django")
            .tempdir()
            .unwrap();
        let db = dir.path().join("scim.sqlite3");
        std::fs::copy(django_template(), &db).unwrap();
        let (child, port) = on_a_free_port("django-scim2", |port| {
            Command::new(venv_python())
                .arg(repo().join("tests/fixtures/scim_django/serve.py"))
                .args([&port.to_string(), db.to_str().unwrap()])
                .env("SCIM_TOKEN", TOKEN)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(dir.path().join("server.log")).unwrap(),
                ))
                .spawn()
                .expect("python: run scripts/setup.sh")
        });
        Scim {
            child: Guard(child),
            port,
            kind: ScimKind::Django,
            _dir: Some(dir),
        }
    }

    /// Whether this server keeps a user attribute as sent (django-scim2's default adapter
    /// keeps userName, name, one email without its type, active and externalId, and computes
    /// displayName itself).
    pub fn keeps(&self, attr: &str) -> bool {
        match self.kind {
            ScimKind::Scim2Server => true,
            ScimKind::Django => matches!(
                attr,
                "userName" | "name" | "emails" | "active" | "externalId"
            ),
        }
    }

    fn prefix(&self) -> &'static str {
        match self.kind {
            ScimKind::Scim2Server => "/v2",
            ScimKind::Django => "/scim/v2",
        }
    }

    /// Starts the server with extra command-line arguments.
    pub fn start_with(extra: &[&str]) -> Scim {
        let (child, port) = on_a_free_port("scim2-server", |port| {
            Command::new(scim_binary())
                .args(extra)
                .args(["--hostname", "127.0.0.1", "--port", &port.to_string(), "--bearer-token", TOKEN])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("scim2-server: run `.ci/run` or `python3 -m venv .venv && .venv/bin/pip install scim2-server`")
        });
        Scim {
            child: Guard(child),
            port,
            kind: ScimKind::Scim2Server,
            _dir: None,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.prefix())
    }

    /// The base URL through a proxy on `port` in front of this server.
    pub fn base_via(&self, port: u16) -> String {
        format!("http://127.0.0.1:{port}{}", self.prefix())
    }

    /// One HTTP/1.0 request (the server's own protocol), returning status and JSON body.
    pub fn http(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {}{path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/scim+json\r\nContent-Length: {}\r\n\r\n{payload}",
            self.prefix(),
            payload.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let text = String::from_utf8_lossy(&resp);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let json = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or(Value::String(body.to_string()))
        };
        (status, json)
    }

    /// Every resource of a type, page by page (bounded).
    /// Every resource, each once: a listing that shifted while the server was written to
    /// (a resource on two pages, or on none) is made again (bounded), and what it repeats is
    /// taken once.
    pub fn list(&self, resource: &str) -> Vec<Value> {
        let mut last = Vec::new();
        for _ in 0..5 {
            let (items, total) = self.list_once(resource);
            let mut ids = std::collections::BTreeSet::new();
            let unique: Vec<Value> = items
                .into_iter()
                .filter(|v| ids.insert(v["id"].as_str().unwrap_or_default().to_string()))
                .collect();
            let whole = unique.len() == total;
            last = unique;
            if whole {
                break;
            }
        }
        last
    }

    fn list_once(&self, resource: &str) -> (Vec<Value>, usize) {
        let mut out = Vec::new();
        let mut total = 0;
        for _ in 0..1000 {
            let start = out.len() + 1;
            let (status, doc) = self.http(
                "GET",
                &format!("/{resource}?startIndex={start}&count=500"),
                None,
            );
            assert_eq!(status, 200, "{doc}");
            let page = doc["Resources"].as_array().cloned().unwrap_or_default();
            total = doc["totalResults"].as_u64().unwrap_or(0) as usize;
            let empty = page.is_empty();
            out.extend(page);
            if empty || out.len() >= total {
                break;
            }
        }
        (out, total)
    }

    pub fn users(&self) -> Vec<Value> {
        self.list("Users")
    }

    pub fn groups(&self) -> Vec<Value> {
        self.list("Groups")
    }

    pub fn user(&self, user_name: &str) -> Option<Value> {
        self.users()
            .into_iter()
            .find(|u| u["userName"] == user_name)
    }

    pub fn group(&self, name: &str) -> Option<Value> {
        self.groups().into_iter().find(|g| g["displayName"] == name)
    }

    /// Asserts that the server holds `expected` users, no userName twice (`context` says when).
    pub fn assert_users_once(&self, expected: usize, context: &str) {
        let names: Vec<String> = self
            .users()
            .iter()
            .map(|u| u["userName"].as_str().unwrap_or_default().to_string())
            .collect();
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(names.len(), unique.len(), "duplicates {context}");
        assert_eq!(names.len(), expected, "missing users {context}");
    }

    /// userNames of a group's members, sorted.
    pub fn member_names(&self, group: &str) -> Vec<String> {
        self.members_by_group()
            .remove(group)
            .unwrap_or_else(|| panic!("no group {group} on the SCIM server"))
    }

    /// Every group's members as sorted userNames (a member that names no user as
    /// `<dangling id>`), from one listing of each resource type.
    pub fn members_by_group(&self) -> BTreeMap<String, Vec<String>> {
        let users = self.users();
        let names: std::collections::HashMap<&str, &str> = users
            .iter()
            .filter_map(|u| Some((u["id"].as_str()?, u["userName"].as_str()?)))
            .collect();
        self.groups()
            .iter()
            .map(|g| {
                let mut members: Vec<String> = g["members"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|m| {
                        let id = m["value"].as_str().unwrap_or_default();
                        names
                            .get(id)
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| format!("<dangling {id}>"))
                    })
                    .collect();
                members.sort();
                (
                    g["displayName"].as_str().unwrap_or_default().to_string(),
                    members,
                )
            })
            .collect()
    }

    /// `meta.version` of every resource: unchanged versions prove nothing was written. A server
    /// without versions (django-scim2) gives the whole resource instead: unchanged content.
    pub fn versions(&self) -> Vec<(String, String)> {
        let kind = self.kind;
        let mut v: Vec<(String, String)> = self
            .users()
            .into_iter()
            .chain(self.groups())
            .map(|mut r| {
                // Ids are per resource type on some servers.
                let kind_of = if r.get("userName").is_some() {
                    "Users"
                } else {
                    "Groups"
                };
                let id = format!("{kind_of}/{}", r["id"].as_str().unwrap());
                let version = match kind {
                    ScimKind::Scim2Server => r["meta"]["version"].to_string(),
                    ScimKind::Django => {
                        let o = r.as_object_mut().unwrap();
                        o.remove("meta");
                        // A member's `display` follows the user's name: not a write.
                        if let Some(Value::Array(members)) = o.get_mut("members") {
                            for m in members.iter_mut() {
                                if let Some(m) = m.as_object_mut() {
                                    m.remove("display");
                                }
                            }
                        }
                        r.to_string()
                    }
                };
                (id, version)
            })
            .collect();
        v.sort();
        v
    }

    pub fn stop(&mut self) {
        self.child.stop();
    }
}

/// Runs the dirbridge binary with `config` and waits for it.
pub fn run_dirbridge(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_dirbridge"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Starts the dirbridge binary in the background, its output to `run.out` / `run.err` in `dir`.
pub fn spawn_dirbridge(config: &Path, args: &[&str], env: &[(&str, &str)], dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dirbridge"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            std::fs::File::create(dir.join("run.out")).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("run.err")).unwrap(),
        ))
        .spawn()
        .unwrap()
}

/// The gateway side of a test: a SCIM server, a folder with secrets, the config, and the binary.
pub struct Gateway {
    pub scim: Scim,
    pub dir: tempfile::TempDir,
    pub ldap_url: String,
    /// `[ldap]` keys fixed by the kind of directory (bind DN, base, filters).
    pub ldap_fixed: String,
    /// More `[ldap]` keys, set by a test.
    pub ldap_extra: String,
    pub target_url: String,
    /// More `[target]` keys, set by a test.
    pub target_extra: String,
    /// Sections fixed by the kind of directory, after `[state]`.
    pub sections_fixed: String,
    /// More sections (`[sync]`, `[mapping.custom]`, ...), set by a test.
    pub extra: String,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Gateway {
    pub fn new(
        ldap_url: String,
        bind_password: &str,
        ldap_fixed: String,
        sections_fixed: String,
    ) -> Gateway {
        Gateway::with_scim(
            Scim::start(),
            ldap_url,
            bind_password,
            ldap_fixed,
            sections_fixed,
        )
    }

    pub fn with_scim(
        scim: Scim,
        ldap_url: String,
        bind_password: &str,
        ldap_fixed: String,
        sections_fixed: String,
    ) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("dirbridge-env")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("bind.pw"), format!("{bind_password}\n")).unwrap();
        std::fs::write(dir.path().join("scim.token"), TOKEN).unwrap();
        Gateway {
            target_url: scim.base(),
            target_extra: String::new(),
            scim,
            dir,
            ldap_url,
            ldap_fixed,
            ldap_extra: String::new(),
            sections_fixed,
            extra: String::new(),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("dirbridge.toml")
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn write_config(&self) {
        let text = format!(
            "[ldap]\n\
             url = \"{url}\"\n\
             bind_password_file = \"bind.pw\"\n\
             {ldap_fixed}\n\
             {ldap_extra}\n\
             [target]\n\
             kind = \"scim\"\n\
             url = \"{target}\"\n\
             token_file = \"scim.token\"\n\
             timeout_secs = 10\n\
             {target_extra}\n\
             [state]\n\
             path = \"state\"\n\
             cache_capacity_mib = 8\n\
             {sections_fixed}\n\
             {extra}\n",
            url = self.ldap_url,
            target = self.target_url,
            target_extra = self.target_extra,
            ldap_fixed = self.ldap_fixed,
            ldap_extra = self.ldap_extra,
            sections_fixed = self.sections_fixed,
            extra = self.extra,
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Runs the dirbridge binary with the generated config.
    pub fn run(&self, args: &[&str]) -> Run {
        self.write_config();
        run_dirbridge(&self.config_path(), args, &[])
    }

    /// Starts the dirbridge binary in the background (for `run`), output to files in the folder.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.write_config();
        spawn_dirbridge(&self.config_path(), args, &[], self.dir.path())
    }

    /// What a background dirbridge printed on standard error.
    pub fn spawned_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run.err")).unwrap_or_default()
    }

    /// `dirbridge sync`, asserting success.
    pub fn sync(&self) -> Run {
        let r = self.run(&["sync"]);
        assert_eq!(r.code, 0, "{r:?}");
        r
    }
}

/// Runs `run` until it exits 0, `attempts` times at most (after a crash a run may need another
/// to complete); the last run.
pub fn until_ok(attempts: usize, mut run: impl FnMut() -> Run) -> Run {
    let mut last = run();
    for _ in 1..attempts {
        if last.code == 0 {
            break;
        }
        last = run();
    }
    last
}

/// `kill -9` of a gateway process `after` it started, unless it has ended by then: whether it
/// was killed (waited for either way).
pub fn kill_9_after(mut child: Child, after: Duration) -> bool {
    std::thread::sleep(after);
    if child.try_wait().unwrap().is_some() {
        return false;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    true
}

/// An LDAP connection to the test slapd, bound as its administrator.
pub async fn bind_admin(url: &str) -> ldap3::Ldap {
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(url).await.unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(ADMIN_DN, ADMIN_PW)
        .await
        .unwrap()
        .success()
        .unwrap();
    ldap
}

/// A test environment: slapd with the base fixture, a SCIM server, and a config for dirbridge.
pub struct Env {
    pub slapd: Slapd,
    pub gw: Gateway,
}

impl std::ops::Deref for Env {
    type Target = Gateway;
    fn deref(&self) -> &Gateway {
        &self.gw
    }
}

impl std::ops::DerefMut for Env {
    fn deref_mut(&mut self) -> &mut Gateway {
        &mut self.gw
    }
}

impl Env {
    pub fn start() -> Env {
        Env::with_slapd(Slapd::start())
    }

    pub fn with_slapd(slapd: Slapd) -> Env {
        Env::with_servers(slapd, Scim::start_default())
    }

    /// slapd with the base fixture, and django-scim2 as the target.
    pub fn start_django() -> Env {
        Env::with_servers(Slapd::start(), Scim::start_django())
    }

    pub fn with_servers(slapd: Slapd, scim: Scim) -> Env {
        slapd.load("base.ldif");
        let ldap_fixed = format!(
            "bind_dn = \"{ADMIN_DN}\"\n\
             base_dn = \"{BASE_DN}\"\n\
             user_filter = \"(&(objectClass=inetOrgPerson)(!(description=excluded)))\"\n\
             page_size = 2\n"
        );
        let sections =
            "[mapping.active]\nattribute = \"employeeType\"\ninactive_values = [\"disabled\"]\n"
                .to_string();
        let gw = Gateway::with_scim(scim, slapd.url(), ADMIN_PW, ldap_fixed, sections);
        Env { slapd, gw }
    }
}

/// Something the test's SCIM server refuses in a user, and how it is put right: (directory
/// attribute, refused value, accepted value, words of the refusal). scim2-server refuses a
/// profileUrl that is not a URI (the mapping it needs is added to `extra`), django-scim2 an email
/// that is not one.
pub fn refusable(
    kind: ScimKind,
    extra: &mut String,
) -> (&'static str, &'static str, &'static str, &'static str) {
    match kind {
        ScimKind::Scim2Server => {
            extra.push_str("[mapping.custom]\nprofileUrl = \"labeledURI\"\n");
            (
                "labeledURI",
                "not a url",
                "https://example.org/~carol",
                "Invalid URI",
            )
        }
        ScimKind::Django => ("mail", "not an email", "carol@example.org", "Invalid email"),
    }
}

/// Sets a directory attribute of a user of the base fixture.
pub fn set_attribute(slapd: &Slapd, user: &str, attribute: &str, value: &str) {
    slapd.modify(&format!(
        "dn: uid={user},ou=people,dc=example,dc=org\nchangetype: modify\nreplace: {attribute}\n{attribute}: {value}\n"
    ));
}

/// A number in the one-line summary, e.g. `count(&run, "users", "created")`.
pub fn count(run: &Run, section: &str, what: &str) -> u64 {
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("sync:") || l.starts_with("resync:"))
        .unwrap_or_else(|| panic!("no summary line in {run:?}"));
    let part = if section.is_empty() {
        line
    } else {
        line.split(';')
            .find(|p| {
                let p = p
                    .trim_start()
                    .trim_start_matches("resync:")
                    .trim_start_matches("sync:");
                p.trim_start().starts_with(section)
            })
            .unwrap_or_else(|| panic!("no {section} in {line}"))
    };
    part.split(',')
        .find_map(|item| {
            let words: Vec<&str> = item.split_whitespace().collect();
            let i = words.iter().position(|w| *w == what)?;
            words.get(i.checked_sub(1)?)?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no `{what}` in `{part}`"))
}

/// The line of `dirbridge check` at `level` about `check` (its text after the two columns),
/// and the fix printed under it (empty when none).
#[allow(clippy::panic)]
pub fn check_line(r: &Run, level: &str, check: &str) -> (String, String) {
    let head = format!("{level:<5} {check:<11} ");
    let lines: Vec<&str> = r.stdout.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no `{head}` line: {r:?}"));
    let fix = lines
        .get(i + 1)
        .and_then(|l| l.trim_start().strip_prefix("fix: "))
        .unwrap_or_default();
    (lines[i][head.len()..].to_string(), fix.to_string())
}

/// One of several `[ha]` gateways sharing a [`Gateway`]'s directory and target: its own folder
/// (config, secrets, state) and status port.
pub struct HaNode {
    pub dir: PathBuf,
    pub status: u16,
}

impl HaNode {
    pub fn spawn(&self) -> Guard {
        Guard(spawn_dirbridge(
            &self.dir.join("dirbridge.toml"),
            &["run"],
            &[],
            &self.dir,
        ))
    }

    /// `active` or `standby`, as its `/status` says.
    pub fn role(&self) -> Option<String> {
        http_get(self.status, "/status")
            .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
            .and_then(|s| s["ha"]["role"].as_str().map(str::to_string))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("run.err")).unwrap_or_default()
    }
}

/// What each of `nodes` logged, one after the other (for a failing assertion).
pub fn ha_logs(nodes: &[HaNode]) -> String {
    nodes
        .iter()
        .map(HaNode::log)
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// `n` gateways on `gw`'s directory and target with `[ha]` on `lease_dn` (renew 500 ms, ttl
/// 3 s, margin 1 s) and `detection` in `[daemon]` (its change feed and poll interval).
pub fn ha_nodes(gw: &mut Gateway, lease_dn: &str, detection: &str, n: usize) -> Vec<HaNode> {
    (0..n)
        .map(|i| {
            let dir = gw.dir.path().join(format!("gw{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in ["bind.pw", "scim.token"] {
                std::fs::copy(gw.dir.path().join(f), dir.join(f)).unwrap();
            }
            let status = free_port();
            gw.extra = format!(
                "[daemon]\n{detection}\nfull_resync = \"off\"\nlisten = \"127.0.0.1:{status}\"\n\
                 [ha]\nlease_dn = \"{lease_dn}\"\ninstance_id = \"gw{i}\"\nrenew = \"500ms\"\n\
                 lease_ttl = \"3s\"\nmargin = \"1s\"\n"
            );
            gw.write_config();
            std::fs::copy(gw.config_path(), dir.join("dirbridge.toml")).unwrap();
            HaNode { dir, status }
        })
        .collect()
}

/// The one node of `nodes` (those running) that says it is active, once every running one
/// answers and exactly one does.
pub fn ha_active(nodes: &[HaNode], running: &[bool], secs: u64) -> Option<usize> {
    let mut found = None;
    wait_until(secs, || {
        let roles: Vec<Option<String>> = nodes
            .iter()
            .zip(running)
            .map(|(n, r)| if *r { n.role() } else { None })
            .collect();
        let active: Vec<usize> = (0..roles.len())
            .filter(|i| roles[*i].as_deref() == Some("active"))
            .collect();
        found = active.first().copied();
        active.len() == 1 && roles.iter().zip(running).all(|(r, on)| r.is_some() == *on)
    })
    .then_some(found)
    .flatten()
}
