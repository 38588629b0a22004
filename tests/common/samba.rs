//! A real Active Directory domain controller: Samba AD DC, provisioned once per test process
//! into a template, then copied per test and started on its own loopback address (Samba's LDAP
//! ports are fixed, so each DC gets an address of 127.0.0.0/8 instead of a port).

use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{certs, Gateway, Guard};

pub const REALM: &str = "CORP.EXAMPLE.ORG";
pub const DOMAIN: &str = "CORP";
pub const AD_BASE: &str = "DC=corp,DC=example,DC=org";
pub const AD_ADMIN: &str = "Administrator@corp.example.org";
pub const AD_PW: &str = "Adm1n-Pa55word!";
/// Where the tests put their people and groups.
pub const OU: &str = "OU=Corp,DC=corp,DC=example,DC=org";

/// The provisioned template (once per process: provisioning takes several seconds).
fn template() -> &'static PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("dirbridge-samba-tpl").tempdir().unwrap().keep();
        let out = Command::new("samba-tool")
            .args(["domain", "provision"])
            .arg(format!("--targetdir={}", dir.display()))
            .args([
                &format!("--realm={REALM}"),
                &format!("--domain={DOMAIN}"),
                "--server-role=dc",
                "--dns-backend=NONE",
                "--use-rfc2307",
                &format!("--adminpass={AD_PW}"),
                // Rewritten per copy; /8 makes samba bind exactly the address given.
                "--option=interfaces=127.0.0.254/8",
                "--option=bind interfaces only=yes",
            ])
            .output()
            .expect("samba-tool: install samba, samba-ad-dc, samba-ad-provision (scripts/setup.sh does)");
        assert!(
            out.status.success(),
            "samba-tool domain provision failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// A server certificate for every address a test DC may get, signed by the test CA.
fn dc_cert() -> &'static (PathBuf, PathBuf) {
    static CERT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    CERT.get_or_init(|| {
        let c = certs();
        let dir = &c.dir;
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
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
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "dc.key",
            "-out",
            "dc.csr",
            "-subj",
            "/CN=dc.corp.example.org",
        ]);
        let ips: Vec<String> = (2..=250).map(|i| format!("IP:127.0.0.{i}")).collect();
        std::fs::write(
            dir.join("dc.ext"),
            format!(
                "subjectAltName=DNS:dc.corp.example.org,{}\nextendedKeyUsage=serverAuth\n",
                ips.join(",")
            ),
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "dc.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "dc.pem",
            "-days",
            "2",
            "-extfile",
            "dc.ext",
        ]);
        // Samba refuses a key file others can read.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join("dc.key"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        (dir.join("dc.pem"), dir.join("dc.key"))
    })
}

/// The next free loopback address (nothing answering on its LDAP port).
fn next_address() -> String {
    static NEXT: AtomicU8 = AtomicU8::new(2);
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(n < 250, "out of loopback addresses for test DCs");
        let ip = format!("127.0.0.{n}");
        if std::net::TcpStream::connect_timeout(
            &format!("{ip}:389").parse().unwrap(),
            Duration::from_millis(50),
        )
        .is_err()
        {
            return ip;
        }
    }
}

/// Starts samba on a prepared folder and waits until it serves LDAP on `ip`.
fn launch(dir: &std::path::Path, ip: &str) -> (Guard, ChildStdin) {
    let conf_path = dir.join("etc/smb.conf");
    // /usr/sbin may not be on a non-login PATH.
    let samba = ["/usr/sbin/samba", "/usr/local/sbin/samba"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("samba");
    let mut child = Command::new(samba)
        .args(["-i", "-M", "single", "-s"])
        .arg(&conf_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(
            std::fs::File::create(dir.join("samba.out")).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("samba.err")).unwrap(),
        ))
        .spawn()
        .expect("samba: install samba-ad-dc (scripts/setup.sh does)");
    let stdin = child.stdin.take().unwrap();
    let mut guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = Command::new("ldapsearch")
            .args([
                "-x",
                "-H",
                &format!("ldap://{ip}"),
                "-b",
                "",
                "-s",
                "base",
                "highestCommittedUSN",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if probe.success() {
            return (guard, stdin);
        }
        if let Ok(Some(st)) = guard.0.try_wait() {
            let err = std::fs::read_to_string(dir.join("samba.err")).unwrap_or_default();
            panic!("samba exited ({st}) before serving LDAP on {ip}: {err}");
        }
        if Instant::now() > deadline {
            guard.stop();
            panic!("samba did not serve LDAP on {ip} within 30s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running Samba AD DC. Dropping it closes samba's stdin (samba exits) and kills it.
pub struct SambaDc {
    guard: Guard,
    /// Samba exits when this closes.
    stdin: Option<ChildStdin>,
    pub dir: tempfile::TempDir,
    pub ip: String,
}

impl SambaDc {
    pub fn start() -> SambaDc {
        let tpl = template();
        let (cert, key) = dc_cert();
        let dir = tempfile::Builder::new()
            .prefix("dirbridge-dc")
            .tempdir()
            .unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", tpl.display()))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let ip = next_address();
        let conf_path = dir.path().join("etc/smb.conf");
        let conf = std::fs::read_to_string(&conf_path)
            .unwrap()
            .replace(
                &tpl.display().to_string(),
                &dir.path().display().to_string(),
            )
            .replace("127.0.0.254/8", &format!("{ip}/8"));
        let d = dir.path().display();
        let mut out = String::new();
        for line in conf.lines() {
            let t = line.trim_start();
            if t.starts_with("server services")
                || t.starts_with("log file")
                || t.starts_with("logging")
            {
                continue;
            }
            out.push_str(line);
            out.push('\n');
            if t == "[global]" {
                out.push_str(&format!(
                    "\tserver services = ldap\n\
                     \tldap server require strong auth = no\n\
                     \tldb:nosync = true\n\
                     \tpid directory = {d}\n\
                     \tlog file = {d}/samba.log\n\
                     \ttls enabled = yes\n\
                     \ttls keyfile = {key}\n\
                     \ttls certfile = {cert}\n\
                     \ttls cafile = {ca}\n",
                    key = key.display(),
                    cert = cert.display(),
                    ca = certs().ca.display(),
                ));
            }
        }
        std::fs::write(&conf_path, out).unwrap();
        let (guard, stdin) = launch(dir.path(), &ip);
        let dc = SambaDc {
            guard,
            stdin: Some(stdin),
            dir,
            ip,
        };
        dc.add(&format!("dn: {OU}\nobjectClass: organizationalUnit\n"));
        dc
    }

    pub fn url(&self) -> String {
        format!("ldap://{}", self.ip)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://{}", self.ip)
    }

    fn tool(&self, tool: &str, args: &[&str], input: &str) -> std::process::Output {
        let mut cmd = Command::new(tool);
        cmd.args(["-x", "-H", &self.url(), "-D", AD_ADMIN, "-w", AD_PW])
            .args(args);
        super::run_with_input(cmd, input)
    }

    pub fn modify(&self, ldif: &str) {
        let out = self.tool("ldapmodify", &[], ldif);
        assert!(
            out.status.success(),
            "ldapmodify on the DC failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            &ldif[..ldif.len().min(2000)]
        );
    }

    pub fn add(&self, ldif: &str) {
        let out = self.tool("ldapadd", &[], ldif);
        assert!(
            out.status.success(),
            "ldapadd on the DC failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            &ldif[..ldif.len().min(2000)]
        );
    }

    pub fn delete(&self, dn: &str) {
        let out = self.tool("ldapdelete", &[dn], "");
        assert!(
            out.status.success(),
            "ldapdelete {dn}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// One attribute's values of one entry, as ldapsearch prints them.
    pub fn read(&self, dn: &str, attr: &str) -> Vec<String> {
        let out = self.tool(
            "ldapsearch",
            &[
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-b",
                dn,
                "-s",
                "base",
                "(objectClass=*)",
                attr,
            ],
            "",
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                // `attr:: value` is base64 (binary values such as objectGUID).
                k.trim_end_matches(':')
                    .eq_ignore_ascii_case(attr)
                    .then(|| v.to_string())
            })
            .collect()
    }

    /// An object's GUID as the DC itself writes it (the `<GUID=...>` of an extended DN).
    pub fn guid_of(&self, dn: &str) -> String {
        let out = self.tool(
            "ldapsearch",
            &[
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-E",
                "1.2.840.113556.1.4.529=::MAMCAQE=",
                "-b",
                dn,
                "-s",
                "base",
                "(objectClass=*)",
                "1.1",
            ],
            "",
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = text
            .lines()
            .find(|l| l.starts_with("dn"))
            .unwrap_or_else(|| panic!("no entry {dn}: {text}"));
        // The extended DN has "<" and ";" in it, so ldapsearch prints it base64-encoded.
        let b64 = line.trim_start_matches("dn::").trim();
        let out = super::run_with_input(
            {
                let mut c = Command::new("base64");
                c.arg("-d");
                c
            },
            b64,
        );
        let ext = String::from_utf8_lossy(&out.stdout).to_string();
        ext.strip_prefix("<GUID=")
            .and_then(|r| r.split('>').next())
            .unwrap_or_else(|| panic!("not an extended DN: {ext}"))
            .to_lowercase()
    }

    pub fn stop(&mut self) {
        self.stdin = None;
        self.guard.stop();
    }

    /// Gives the DC a new invocationId, as restoring it from a backup does: stops it, changes
    /// the attribute in the configuration partition's database file, and starts it again.
    pub fn restore_from_backup(&mut self) {
        self.stop();
        let ntds = format!("CN=NTDS Settings,CN=VM,CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration,{AD_BASE}");
        let ldif = format!("dn: {ntds}\nchangetype: modify\nreplace: invocationId\ninvocationId:: 3q2+796tvu/erb7v3q2+7w==\n");
        let partition = self
            .dir
            .path()
            .join("private/sam.ldb.d")
            .join(format!("CN=CONFIGURATION,{}.ldb", AD_BASE.to_uppercase()));
        let mut cmd = Command::new("ldbmodify");
        cmd.arg("-H").arg(&partition);
        let out = super::run_with_input(cmd, &ldif);
        assert!(
            out.status.success(),
            "ldbmodify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (guard, stdin) = launch(self.dir.path(), &self.ip);
        self.guard = guard;
        self.stdin = Some(stdin);
    }
}

/// LDIF for a user under [`OU`]. `uac` 512 is a normal account, 514 a disabled one.
pub fn user_ldif(sam: &str, given: &str, sn: &str, uac: u32, extra: &str) -> String {
    format!(
        "dn: CN={given} {sn},{OU}\nobjectClass: user\nsAMAccountName: {sam}\n\
         userPrincipalName: {sam}@corp.example.org\ngivenName: {given}\nsn: {sn}\n\
         displayName: {given} {sn}\nmail: {sam}@corp.example.org\nuserAccountControl: {uac}\n{extra}\n"
    )
}

/// The `[ldap]` and section keys that point dirbridge at a test DC over LDAPS.
pub fn ad_gateway(dc: &SambaDc) -> Gateway {
    let ldap_fixed = format!(
        "profile = \"ad\"\n\
         bind_dn = \"{AD_ADMIN}\"\n\
         ca_file = \"{ca}\"\n\
         base_dn = \"{AD_BASE}\"\n\
         user_base = \"{OU}\"\n\
         group_base = \"{OU}\"\n\
         page_size = 50\n",
        ca = certs().ca.display()
    );
    Gateway::new(dc.ldaps_url(), AD_PW, ldap_fixed, String::new())
}

/// A test environment around a Samba DC.
pub struct AdEnv {
    pub dc: SambaDc,
    pub gw: Gateway,
}

impl std::ops::Deref for AdEnv {
    type Target = Gateway;
    fn deref(&self) -> &Gateway {
        &self.gw
    }
}

impl std::ops::DerefMut for AdEnv {
    fn deref_mut(&mut self) -> &mut Gateway {
        &mut self.gw
    }
}

impl AdEnv {
    pub fn start() -> AdEnv {
        let dc = SambaDc::start();
        let gw = ad_gateway(&dc);
        AdEnv { dc, gw }
    }
}
