//! A real REST server for the REST target's tests: json-server (npm, pinned) behind a front that
//! checks credentials, with oidc-provider (npm, pinned) as the OAuth 2.0 authorization server,
//! all in `tests/fixtures/rest/server.mjs` (installed by scripts/setup.sh). Tests read and alter
//! what json-server stores through `/__raw`, which skips the credential check.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{
    free_port, repo, run_dirbridge, spawn_dirbridge, Guard, Run, Slapd, ADMIN_DN, ADMIN_PW, BASE_DN,
};

pub const CLIENT_ID: &str = "dirbridge-gw";
pub const CLIENT_SECRET: &str = "cl1ent-s3cret-never-logged";
pub const API_TOKEN: &str = "rest-api-t0ken-secret";
pub const API_USER: &str = "gateway";
pub const API_PASSWORD: &str = "b4sic-pa:ss-word";
pub const API_KEY: &str = "x-api-k3y-value";

/// How the front lets requests in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestAuth {
    None,
    Basic,
    Bearer,
    Header,
    /// Tokens from oidc-provider, valid for this many seconds.
    OAuth2 {
        ttl: u32,
    },
}

pub struct RestServer {
    child: Guard,
    pub port: u16,
    pub auth: RestAuth,
    pub dir: tempfile::TempDir,
}

impl RestServer {
    pub fn start(auth: RestAuth) -> RestServer {
        let dir = tempfile::Builder::new()
            .prefix("dirbridge-rest")
            .tempdir()
            .unwrap();
        let db = dir.path().join("db.json");
        for attempt in 0..5 {
            let port = free_port();
            let mut cmd = Command::new("node");
            cmd.arg(repo().join("tests/fixtures/rest/server.mjs"))
                .args(["--port", &port.to_string()])
                .arg("--db")
                .arg(&db);
            match auth {
                RestAuth::None => cmd.args(["--auth", "none"]),
                RestAuth::Basic => cmd.args([
                    "--auth",
                    "basic",
                    "--user",
                    API_USER,
                    "--password",
                    API_PASSWORD,
                ]),
                RestAuth::Bearer => cmd.args(["--auth", "bearer", "--token", API_TOKEN]),
                RestAuth::Header => cmd.args([
                    "--auth",
                    "header",
                    "--header-name",
                    "X-Api-Key",
                    "--header-value",
                    API_KEY,
                ]),
                RestAuth::OAuth2 { ttl } => cmd.args([
                    "--auth",
                    "oauth2",
                    "--client-id",
                    CLIENT_ID,
                    "--client-secret",
                    CLIENT_SECRET,
                    "--token-ttl",
                    &ttl.to_string(),
                ]),
            };
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(
                    std::fs::File::create(dir.path().join("server.err")).unwrap(),
                ))
                .spawn()
                .expect(
                    "node: run scripts/setup.sh (Node 20 and tests/fixtures/rest/node_modules)",
                );
            let mut out = child.stdout.take().unwrap();
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while out.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
                line.push(byte[0]);
            }
            if line == b"ready" {
                return RestServer {
                    child: Guard(child),
                    port,
                    auth,
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "rest fixture did not start on {port} (attempt {attempt}): {}",
                std::fs::read_to_string(dir.path().join("server.err")).unwrap_or_default()
            );
        }
        panic!("the REST fixture did not start; run scripts/setup.sh");
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/oauth/token", self.port)
    }

    /// One request to the server, without credentials (`/__raw/...`, `/__stats`).
    pub fn http(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        http_json(self.port, method, path, body, &[])
    }

    pub fn list(&self, collection: &str) -> Vec<Value> {
        let (status, doc) = self.http("GET", &format!("/__raw/{collection}"), None);
        assert_eq!(status, 200, "{doc}");
        doc.as_array().cloned().unwrap_or_default()
    }

    pub fn users(&self) -> Vec<Value> {
        self.list("users")
    }

    pub fn groups(&self) -> Vec<Value> {
        self.list("groups")
    }

    pub fn user(&self, user_name: &str) -> Option<Value> {
        let all: Vec<Value> = self
            .users()
            .into_iter()
            .filter(|u| u["userName"] == user_name)
            .collect();
        assert!(all.len() <= 1, "duplicates of {user_name}: {all:?}");
        all.into_iter().next()
    }

    pub fn group(&self, name: &str) -> Option<Value> {
        self.groups().into_iter().find(|g| g["displayName"] == name)
    }

    /// The userNames of a group's members, sorted.
    pub fn member_names(&self, group: &str) -> Vec<String> {
        let users = self.users();
        let g = self
            .group(group)
            .unwrap_or_else(|| panic!("no group {group}"));
        let mut names: Vec<String> = g["members"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|id| {
                users
                    .iter()
                    .find(|u| u["id"] == *id)
                    .map(|u| u["userName"].as_str().unwrap_or("").to_string())
                    .unwrap_or_else(|| format!("<dangling {id}>"))
            })
            .collect();
        names.sort();
        names
    }

    pub fn stats(&self) -> Value {
        self.http("GET", "/__stats", None).1
    }

    /// Requests that passed the credential check so far.
    pub fn forwarded(&self) -> u64 {
        self.stats()["forwarded"].as_u64().unwrap_or(0)
    }

    pub fn tokens_issued(&self) -> u64 {
        self.stats()["tokens_issued"].as_u64().unwrap_or(0)
    }

    /// Revokes every token issued so far (through the provider).
    pub fn revoke(&self) -> u64 {
        self.http("POST", "/__revoke", None).1["revoked"]
            .as_u64()
            .unwrap_or(0)
    }

    pub fn stop(&mut self) {
        self.child.stop();
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("db.json")
    }
}

/// One HTTP/1.1 request with `Connection: close`: (status, JSON body or the text as a string).
pub fn http_json(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        payload.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&payload);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let json = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or(Value::String(body.to_string()))
    };
    (status, json)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The README's example events for a json-server-style API (the `# example: rest` block, from
/// `missing_values` to the end of the events), with pages of 2 so that small tests page too:
/// what a newcomer copies is what is tested.
pub fn json_server_events() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = readme
        .split("```toml\n# example: rest\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the README's `# example: rest` block");
    let mut out = String::new();
    let mut keep = false;
    for line in block.lines() {
        if line.starts_with("missing_values") {
            out.push_str(line);
            out.push_str("\n\n");
            continue;
        }
        if line.starts_with('[') {
            keep = line.starts_with("[target.events.");
        }
        if keep {
            out.push_str(&line.replace("_per_page=100", "_per_page=2"));
            out.push('\n');
        }
    }
    assert!(out.contains("[target.events.create_user]"), "{out}");
    // Look-ups of groups by name, which the README leaves to the listing.
    out.push_str("\n[target.events.find_group]\nmethod = \"GET\"\npath = \"/groups?displayName={displayName}\"\n");
    out
}

/// What a REST target's test server says about itself to the config.
pub trait Served {
    /// `target.url`.
    fn base(&self) -> String;
    /// `target.kind`.
    fn kind(&self) -> &'static str;
    /// The `[target.auth]` table the server accepts.
    fn default_auth(&self) -> String;
}

impl Served for RestServer {
    fn base(&self) -> String {
        RestServer::base(self)
    }
    fn kind(&self) -> &'static str {
        "rest"
    }
    fn default_auth(&self) -> String {
        match self.auth {
            RestAuth::None => "[target.auth]\ntype = \"none\"\n".into(),
            RestAuth::Basic => format!(
                "[target.auth]\ntype = \"basic\"\nuser = \"{API_USER}\"\npassword_file = \"api.password\"\n"
            ),
            RestAuth::Bearer => "[target.auth]\ntype = \"bearer\"\ntoken_file = \"api.token\"\n".into(),
            RestAuth::Header => "[target.auth]\ntype = \"header\"\nname = \"X-Api-Key\"\nvalue_env = \"DIRBRIDGE_TEST_API_KEY\"\n".into(),
            RestAuth::OAuth2 { .. } => format!(
                "[target.auth]\ntype = \"oauth2\"\ntoken_url = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = \"client.secret\"\n",
                self.token_url()
            ),
        }
    }
}

/// slapd with the base fixture, a REST server as the target, and a config folder.
pub struct RestEnv<S: Served = RestServer> {
    pub slapd: Slapd,
    pub rest: S,
    pub dir: tempfile::TempDir,
    /// `[target]` keys after kind and url (auth comes from the server's mode unless set here).
    pub target_extra: String,
    /// The `[target.auth]` table; by default the one the server's mode accepts.
    pub auth: Option<String>,
    /// The events; json-server's by default.
    pub events: String,
    /// More sections (`[sync]`, `[mapping.custom]`).
    pub extra: String,
}

impl RestEnv<RestServer> {
    pub fn start(auth: RestAuth) -> RestEnv {
        let slapd = Slapd::start();
        slapd.load("base.ldif");
        RestEnv::with(slapd, RestServer::start(auth))
    }
}

impl<S: Served> RestEnv<S> {
    pub fn with(slapd: Slapd, rest: S) -> RestEnv<S> {
        let events = if rest.kind() == "rest" {
            json_server_events()
        } else {
            String::new()
        };
        let dir = tempfile::Builder::new()
            .prefix("dirbridge-restenv")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("bind.pw"), format!("{ADMIN_PW}\n")).unwrap();
        std::fs::write(dir.path().join("client.secret"), CLIENT_SECRET).unwrap();
        std::fs::write(dir.path().join("api.token"), API_TOKEN).unwrap();
        std::fs::write(dir.path().join("api.password"), API_PASSWORD).unwrap();
        RestEnv {
            slapd,
            rest,
            dir,
            target_extra: String::new(),
            auth: None,
            events,
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
        self.write_config_via(&self.rest.base());
    }

    /// The config with `target.url` = `url` (a proxy in front of the server).
    pub fn write_config_via(&self, url: &str) {
        let auth = self
            .auth
            .clone()
            .unwrap_or_else(|| self.rest.default_auth());
        let text = format!(
            "[ldap]\n\
             url = \"{url}\"\n\
             bind_dn = \"{ADMIN_DN}\"\n\
             bind_password_file = \"bind.pw\"\n\
             base_dn = \"{BASE_DN}\"\n\
             user_filter = \"(&(objectClass=inetOrgPerson)(!(description=excluded)))\"\n\
             page_size = 2\n\
             [target]\n\
             kind = \"{kind}\"\n\
             url = \"{target}\"\n\
             timeout_secs = 10\n\
             {target_extra}\n\
             {events}\n\
             {auth}\n\
             [state]\n\
             path = \"state\"\n\
             cache_capacity_mib = 8\n\
             [mapping.active]\n\
             attribute = \"employeeType\"\n\
             inactive_values = [\"disabled\"]\n\
             {extra}\n",
            url = self.slapd.url(),
            target = url,
            kind = self.rest.kind(),
            target_extra = self.target_extra,
            events = self.events,
            extra = self.extra,
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Runs with `target.url` = `url`.
    pub fn run_via(&self, url: &str, args: &[&str]) -> Run {
        self.write_config_via(url);
        self.exec(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.write_config();
        self.exec(args, env)
    }

    fn exec(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut all = vec![
            ("DIRBRIDGE_TEST_API_KEY", API_KEY),
            ("DIRBRIDGE_TEST_MO_KEY", MO_API_KEY),
        ];
        all.extend_from_slice(env);
        run_dirbridge(&self.config_path(), args, &all)
    }

    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.write_config();
        spawn_dirbridge(
            &self.config_path(),
            args,
            &[
                ("DIRBRIDGE_TEST_API_KEY", API_KEY),
                ("DIRBRIDGE_TEST_MO_KEY", MO_API_KEY),
            ],
            self.dir.path(),
        )
    }

    pub fn spawned_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run.err")).unwrap_or_default()
    }

    pub fn sync(&self) -> Run {
        let r = self.run(&["sync"]);
        assert_eq!(r.code, 0, "{r:?}");
        r
    }
}

pub const MO_CUSTOMER_KEY: &str = "248751";
pub const MO_API_KEY: &str = "mo-api-k3y-never-logged";

/// The strict miniOrange API emulator (tests/fixtures/rest/miniorange.mjs).
pub struct MiniOrange {
    child: Guard,
    pub port: u16,
}

impl MiniOrange {
    pub fn start() -> MiniOrange {
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("node")
                .arg(repo().join("tests/fixtures/rest/miniorange.mjs"))
                .args([
                    "--port",
                    &port.to_string(),
                    "--customer-key",
                    MO_CUSTOMER_KEY,
                    "--api-key",
                    MO_API_KEY,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("node: run scripts/setup.sh");
            let mut out = child.stdout.take().unwrap();
            let mut buf = [0u8; 6];
            if out.read_exact(&mut buf).is_ok() && &buf == b"ready\n" {
                return MiniOrange {
                    child: Guard(child),
                    port,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the miniOrange emulator did not start");
    }

    pub fn users(&self) -> Vec<Value> {
        http_json(self.port, "GET", "/__users", None, &[])
            .1
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn user(&self, name: &str) -> Option<Value> {
        self.users().into_iter().find(|u| u["username"] == name)
    }

    pub fn stats(&self) -> Value {
        http_json(self.port, "GET", "/__stats", None, &[]).1
    }

    pub fn seed(&self, user: &Value) {
        http_json(self.port, "POST", "/__seed", Some(user), &[]);
    }

    pub fn edit(&self, change: &Value) {
        http_json(self.port, "POST", "/__edit", Some(change), &[]);
    }

    pub fn stop(&mut self) {
        self.child.stop();
    }
}

impl Served for MiniOrange {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/moas", self.port)
    }
    fn kind(&self) -> &'static str {
        "miniorange"
    }
    fn default_auth(&self) -> String {
        format!(
            "[target.auth]\ntype = \"miniorange\"\ncustomer_key = \"{MO_CUSTOMER_KEY}\"\napi_key_env = \"DIRBRIDGE_TEST_MO_KEY\"\n"
        )
    }
}
