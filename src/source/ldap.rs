//! LDAP access with ldap3: TLS set-up, bind, and paged streaming searches (RFC 2696).

use std::time::Duration;

use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, StdStream};

use super::entry::{decode_entry, RawEntry};
use super::paged;
pub(crate) use super::result_text::{describe, op_error, printable};
use super::SourceError;
use crate::config::LdapConfig;

impl Session {
    fn read_controls_list(&self) -> Vec<RawControl> {
        if self.extended_dn {
            vec![extended_dn_control()]
        } else {
            Vec::new()
        }
    }

    /// Sets the controls the next read carries (ldap3 clears them after each operation).
    fn set_read_controls(&mut self) {
        let controls = self.read_controls_list();
        if !controls.is_empty() {
            self.ldap.with_controls(controls);
        }
    }
}

/// How long a connection may be idle before TCP probes the peer, how often, and how many
/// unanswered probes mean it is dead: a long-lived change-feed search on a connection that a
/// firewall silently dropped ends with an error within about a minute instead of waiting forever.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

/// Opens the TCP connection ldap3 will speak over (it cannot set socket options itself), with
/// keepalive on. The host and port come from the URL; TLS is still set up by ldap3.
pub(crate) async fn connect_tcp(cfg: &LdapConfig) -> Result<tokio::net::TcpStream, SourceError> {
    let fail = |reason: String| SourceError::Connect {
        url: cfg.url.clone(),
        reason,
    };
    let url = url::Url::parse(&cfg.url).map_err(|e| fail(e.to_string()))?;
    let port = url.port().unwrap_or(match url.scheme() {
        "ldaps" => 636,
        _ => 389,
    });
    let host = match url.host_str() {
        Some("") | None => "localhost".to_string(),
        Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
    };
    let stream = tokio::time::timeout(
        cfg.timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| fail(format!("no connection within {:?}", cfg.timeout)))?
    .map_err(|e| fail(e.to_string()))?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    let keepalive = keepalive.with_retries(KEEPALIVE_PROBES);
    let sock = socket2::SockRef::from(&stream);
    sock.set_tcp_keepalive(&keepalive)
        .map_err(|e| fail(format!("cannot enable TCP keepalive: {e}")))?;
    let _ = sock.set_tcp_nodelay(true);
    Ok(stream)
}

/// An open, bound LDAP session.
pub(crate) struct Session {
    ldap: Ldap,
    /// Why the relay closed the connection, if the server sent something unsound.
    verdict: super::wire::Verdict,
    /// Searches whose entries the relay decodes (paged reads).
    diversion: super::wire::Diversion,
    timeout: Duration,
    page_size: u32,
    /// Bounds on one search, whatever the server sends: entries and references, and time.
    max_entries: u64,
    max_read_bytes: u64,
    search_time_limit: Duration,
    /// Ask for DNs in extended form (`<GUID=...>;...`): AD references that survive renames.
    extended_dn: bool,
    /// The server of `ldap.url` this session reached.
    server: String,
}

/// LDAP_SERVER_EXTENDED_DN_OID, with the value asking for GUIDs as text (BER `SEQUENCE { 1 }`).
fn extended_dn_control() -> RawControl {
    RawControl {
        ctype: "1.2.840.113556.1.4.529".into(),
        crit: false,
        val: Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
    }
}

impl Session {
    /// Connects (with LDAPS or StartTLS as configured) and binds.
    /// With several servers in `ldap.url`, each is tried in order until one takes the
    /// connection; a failed bind is not tried elsewhere (a wrong password would count against
    /// the account on every domain controller).
    pub(crate) async fn open(cfg: &LdapConfig) -> Result<Session, SourceError> {
        if cfg.servers.len() <= 1 {
            return Session::open_one(cfg).await;
        }
        let mut failures = Vec::new();
        for server in &cfg.servers {
            let one = LdapConfig {
                url: server.clone(),
                ..cfg.clone()
            };
            match Session::open_one(&one).await {
                Ok(session) => {
                    if !failures.is_empty() {
                        tracing::warn!(server = %server, unreachable = %failures.join("; "), "directory: the first servers of ldap.url do not answer; connected to the next");
                    }
                    return Ok(session);
                }
                Err(SourceError::Connect { url, reason }) => {
                    failures.push(format!("{url}: {reason}"))
                }
                Err(e) => return Err(e),
            }
        }
        Err(SourceError::Connect {
            url: cfg.servers.join(", "),
            reason: format!("no server answers ({})", failures.join("; ")),
        })
    }

    async fn open_one(cfg: &LdapConfig) -> Result<Session, SourceError> {
        let socket = connect_tcp(cfg).await?;
        // ldap3 speaks over a local pair to our relay, which does TLS and checks every
        // message before ldap3's decoder sees it (see `wire/`).
        let (local, verdict, diversion) = super::wire::open(cfg, socket).await?;
        let settings = LdapConnSettings::new()
            .set_conn_timeout(cfg.timeout)
            .set_std_stream(StdStream::Unix(local));
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, "ldapi://dirbridge-relay")
            .await
            .map_err(|e| SourceError::Connect {
                url: cfg.url.clone(),
                reason: op_error(e, &verdict),
            })?;
        ldap3::drive!(conn);
        if let (Some(dn), Some(pw)) = (&cfg.bind_dn, &cfg.bind_password) {
            let res = ldap
                .with_timeout(cfg.timeout)
                .simple_bind(dn, pw.expose())
                .await
                // No answer at all (the server took the connection and went silent, or closed
                // it) is the server's failure, not the credentials': the next server of
                // ldap.url is tried. A refused bind (below) is not.
                .map_err(|e| SourceError::Connect {
                    url: cfg.url.clone(),
                    reason: format!(
                        "the server took the connection but did not answer the bind as {dn}: {}",
                        op_error(e, &verdict)
                    ),
                })?;
            if res.rc != 0 {
                return Err(SourceError::Bind {
                    dn: dn.clone(),
                    reason: describe(res.rc, &res.text),
                });
            }
        }
        Ok(Session {
            ldap,
            verdict,
            diversion,
            timeout: cfg.timeout,
            page_size: cfg.page_size,
            max_entries: cfg.max_entries,
            max_read_bytes: cfg.max_read_mib.saturating_mul(1024 * 1024),
            search_time_limit: cfg.search_time_limit,
            extended_dn: cfg.profile == crate::config::Profile::ActiveDirectory,
            server: cfg.url.clone(),
        })
    }

    /// How long one operation may wait for its answer (`ldap.timeout_secs`).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The server this session reached (one of `ldap.url`).
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    /// Why the relay closed the connection, for operations defined elsewhere (content sync).
    pub(crate) fn verdict(&self) -> super::wire::Verdict {
        self.verdict.clone()
    }

    /// The relay's routing of searches, for operations defined next to their protocol
    /// (content sync gates its searches).
    pub(crate) fn diversion(&self) -> &super::wire::Diversion {
        &self.diversion
    }

    /// Waits until the relay has taken what was registered for the last search request
    /// ([`super::wire::Diversion::settled`]).
    pub(crate) async fn routes_settled(&self) -> Result<(), String> {
        self.diversion.settled(self.timeout).await
    }

    /// The ldap3 handle, for operations defined next to their protocol (content sync).
    pub(crate) fn ldap_mut(&mut self) -> &mut Ldap {
        &mut self.ldap
    }

    /// Runs a paged subtree search and hands each entry to `on_entry` as it arrives, so a large
    /// directory is never held whole. Search references (referrals) are skipped. Any error, or
    /// a result code other than success, fails the whole search: the caller must not treat a
    /// partial result as complete.
    pub(crate) async fn search_paged(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[String],
        on_entry: impl FnMut(RawEntry),
    ) -> Result<SearchStats, SourceError> {
        self.search_paged_with(base, filter, attrs, false, on_entry)
            .await
    }

    /// [`Session::search_paged`], optionally with AD's Show Deleted control, so that deleted
    /// objects (tombstones, `isDeleted=TRUE`, same objectGUID) are returned too.
    pub(crate) async fn search_paged_with(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[String],
        show_deleted: bool,
        mut on_entry: impl FnMut(RawEntry),
    ) -> Result<SearchStats, SourceError> {
        let err = |reason: String| SourceError::Search {
            base: base.to_string(),
            filter: filter.to_string(),
            reason,
        };
        let verdict = self.verdict.clone();
        let mut stats = SearchStats::default();
        let deadline = tokio::time::Instant::now() + self.search_time_limit;
        let mut cookie: Vec<u8> = Vec::new();
        let mut empty_pages = 0u32;
        // Everything the server sent (entries, references, intermediate messages), and the
        // size of the entries.
        let mut items = 0u64;
        let mut read_bytes = 0u64;
        // One search request per page, the cookie carried by hand: ldap3's paging adapter
        // decodes the server's control with a decoder that panics on a malformed value.
        loop {
            let mut controls = self.read_controls_list();
            if show_deleted {
                controls.push(RawControl {
                    ctype: super::notify::SHOW_DELETED_OID.into(),
                    crit: true,
                    val: None,
                });
            }
            controls.push(paged::request(self.page_size, &cookie));
            self.ldap.with_controls(controls);
            // The relay decodes this page's entries itself (see `wire::Diversion`); ldap3
            // sees the rest. ldap3's own timeout is not asked for: it would time the result,
            // which comes after the whole page; each answer is timed here instead.
            self.diversion.settled(self.timeout).await.map_err(err)?;
            let mut entries = self.diversion.next_search();
            let started = tokio::time::timeout(
                self.timeout,
                self.ldap
                    .streaming_search(base, Scope::Subtree, filter, attrs.to_vec()),
            )
            .await;
            let mut stream = match started {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    self.diversion.cancel_next();
                    return Err(err(op_error(e, &verdict)));
                }
                Err(_) => {
                    // The request may still go out: it must not take a later search's channel.
                    self.diversion.stop();
                    return Err(err(verdict.get().unwrap_or_else(|| {
                        "no answer within ldap.timeout_secs".to_string()
                    })));
                }
            };
            let mut on_page = 0u64;
            let mut searching = true;
            loop {
                let got = if searching {
                    next_answer(&mut stream, &mut entries, self.timeout, deadline, &verdict)
                        .await
                        .map_err(|why| {
                            err(match why {
                                Late::Deadline => format!(
                                    "the search did not end within ldap.search_time_limit_secs ({}s) after {} entries",
                                    self.search_time_limit.as_secs(),
                                    stats.entries
                                ),
                                Late::Failed(why) => why,
                            })
                        })?
                } else {
                    // The result came: every entry the relay decoded is in the channel.
                    match entries.try_recv() {
                        Ok(entry) => Answer::Entry(entry),
                        Err(_) => break,
                    }
                };
                let entry = match got {
                    Answer::Done => {
                        searching = false;
                        continue;
                    }
                    Answer::Entry(entry) => {
                        stats.by_relay += 1;
                        Some(entry)
                    }
                    Answer::Item(item) => {
                        if item.is_ref() {
                            stats.references += 1;
                            None
                        } else if item.is_intermediate() {
                            None
                        } else {
                            Some(decode_entry(item.0).map_err(err)?)
                        }
                    }
                };
                on_page += 1;
                items += 1;
                if items > self.max_entries {
                    return Err(err(format!(
                        "the server sent more than ldap.max_entries ({}) entries, references and other messages for one search",
                        self.max_entries
                    )));
                }
                let Some(entry) = entry else { continue };
                read_bytes += entry.size() as u64;
                if read_bytes > self.max_read_bytes {
                    return Err(err(format!(
                        "the server sent more than ldap.max_read_mib ({} MiB) of entries for one search",
                        self.max_read_bytes / (1024 * 1024)
                    )));
                }
                stats.entries += 1;
                on_entry(entry);
            }
            // A request the relay never saw takes no later search's entries.
            self.diversion.cancel_next();
            let res = stream.finish().await;
            if res.rc != 0 {
                let mut reason = describe(res.rc, &res.text);
                if !res.refs.is_empty() {
                    let shown: Vec<String> =
                        res.refs.iter().take(3).map(|r| printable(r)).collect();
                    let more = res.refs.len().saturating_sub(3);
                    reason.push_str(&format!(" (to {}", shown.join(", ")));
                    if more > 0 {
                        reason.push_str(&format!(" and {more} more"));
                    }
                    reason.push(')');
                }
                return Err(err(reason));
            }
            let answer = res
                .ctrls
                .iter()
                .find(|c| c.1.ctype == paged::PAGED_RESULTS_OID);
            // No control on the result: the server did not page, and sent everything at once.
            let Some(answer) = answer else { break };
            let page = paged::decode(answer.1.val.as_deref()).map_err(err)?;
            if page.cookie.is_empty() {
                break;
            }
            if on_page == 0 {
                empty_pages += 1;
                if empty_pages >= MAX_EMPTY_PAGES {
                    return Err(err(format!(
                        "the server sent {MAX_EMPTY_PAGES} empty pages in a row, each asking for another"
                    )));
                }
            } else {
                empty_pages = 0;
            }
            cookie = page.cookie;
        }
        stats.bytes = read_bytes;
        tracing::debug!(
            base,
            entries = stats.entries,
            by_relay = stats.by_relay,
            "paged search read"
        );
        Ok(stats)
    }

    /// A budget for a read that starts now (see [`ReadBudget`]).
    pub(crate) fn read_budget(&self) -> ReadBudget {
        ReadBudget {
            deadline: tokio::time::Instant::now() + self.search_time_limit,
            bytes_left: self.max_read_bytes,
            limit: self.search_time_limit,
            max_bytes: self.max_read_bytes,
        }
    }

    /// Reads one entry by DN; `None` when it does not exist.
    pub(crate) async fn read_entry(
        &mut self,
        dn: &str,
        attrs: &[String],
    ) -> Result<Option<RawEntry>, SourceError> {
        self.read_entry_matching(dn, "(objectClass=*)", attrs).await
    }

    /// Reads one entry by DN if it matches `filter`; `None` when it does not exist or match.
    pub(crate) async fn read_entry_matching(
        &mut self,
        dn: &str,
        filter: &str,
        attrs: &[String],
    ) -> Result<Option<RawEntry>, SourceError> {
        let err = |reason: String| SourceError::Search {
            base: dn.to_string(),
            filter: filter.to_string(),
            reason,
        };
        let verdict = self.verdict.clone();
        self.set_read_controls();
        // Streamed, and bounded like a paged search: a base search has one entry, and a server
        // that sends more (or references without end) is cut off rather than buffered.
        let mut stream = self
            .ldap
            .with_timeout(self.timeout)
            .streaming_search(dn, Scope::Base, filter, attrs.to_vec())
            .await
            .map_err(|e| err(op_error(e, &verdict)))?;
        let mut found = None;
        let mut items = 0u64;
        let deadline = tokio::time::Instant::now() + self.search_time_limit;
        loop {
            let item = next_within(&mut stream, self.timeout, deadline, &verdict)
                .await
                .map_err(|why| {
                    err(match why {
                        Late::Deadline => format!(
                            "the read did not end within ldap.search_time_limit_secs ({}s)",
                            self.search_time_limit.as_secs()
                        ),
                        Late::Failed(why) => why,
                    })
                })?;
            let Some(item) = item else { break };
            items += 1;
            if items > self.max_entries {
                return Err(err(format!(
                    "the server sent more than ldap.max_entries ({}) items for one entry",
                    self.max_entries
                )));
            }
            if item.is_ref() || item.is_intermediate() {
                continue;
            }
            if found.is_some() {
                return Err(err(
                    "the server answered a read of one entry with several".into()
                ));
            }
            found = Some(decode_entry(item.0).map_err(err)?);
        }
        let result = stream.finish().await;
        match result.rc {
            0 => Ok(found),
            32 => Ok(None),
            rc => Err(err(describe(rc, &result.text))),
        }
    }

    /// Reads the rest of a ranged attribute of `dn` from `start`, `step` values at a time,
    /// until the server's range ends in `*`.
    pub(crate) async fn read_ranges(
        &mut self,
        dn: &str,
        attr: &str,
        mut start: u32,
        step: Option<u32>,
        budget: &mut ReadBudget,
    ) -> Result<Vec<Vec<u8>>, SourceError> {
        let err = |reason: String| SourceError::Search {
            base: dn.to_string(),
            filter: "(objectClass=*)".into(),
            reason,
        };
        let mut values = Vec::new();
        // Each round must move forward; a server that does not is cut off rather than looped
        // on, and the rounds share the budget of the search they complete.
        loop {
            budget
                .check(&format!("the range retrieval of {attr}"))
                .map_err(err)?;
            let wanted = super::range::request(attr, start, step);
            let Some(mut entry) = self.read_entry(dn, &[wanted]).await? else {
                break;
            };
            let pending = super::range::fold(&mut entry);
            let got = entry.attrs.remove(attr).unwrap_or_default();
            budget.spend(
                got.iter()
                    .map(|v| (v.len() + std::mem::size_of::<Vec<u8>>()) as u64)
                    .sum(),
            );
            values.extend(got);
            match pending
                .into_iter()
                .find(|(a, _)| a.eq_ignore_ascii_case(attr))
            {
                Some((_, next)) if next > start => start = next,
                Some(_) => {
                    return Err(err(format!(
                        "the server's ranges of {attr} do not advance past {start}"
                    )))
                }
                None => break,
            }
        }
        Ok(values)
    }

    /// The server's `highestCommittedUSN` and `dsServiceName` (AD), and the DC's invocationId.
    pub(crate) async fn usn_position(&mut self) -> Result<UsnPosition, SourceError> {
        let err = |reason: String| SourceError::Search {
            base: "(root DSE)".into(),
            filter: "(objectClass=*)".into(),
            reason,
        };
        let root = self
            .read_entry(
                "",
                &[
                    "highestCommittedUSN".into(),
                    "dsServiceName".into(),
                    "defaultNamingContext".into(),
                ],
            )
            .await?
            .ok_or_else(|| err("the server has no root DSE".into()))?;
        let usn = root
            .first_text(&["highestCommittedUSN".into()])
            .ok()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                err("no highestCommittedUSN: this is not an Active Directory server".into())
            })?;
        let dc = root
            .first_text(&["dsServiceName".into()])
            .ok()
            .flatten()
            .ok_or_else(|| err("no dsServiceName".into()))?;
        let dc = super::dn::split_extended(&dc).1.to_string();
        let naming_context = root
            .first_text(&["defaultNamingContext".into()])
            .ok()
            .flatten()
            .map(|nc| super::dn::split_extended(&nc).1.to_string())
            .ok_or_else(|| err("no defaultNamingContext".into()))?;
        let ntds = self
            .read_entry(&dc, &["invocationId".into()])
            .await?
            .ok_or_else(|| err(format!("cannot read {dc}")))?;
        let invocation_id = ntds
            .values("invocationId")
            .first()
            .and_then(|v| <&[u8; 16]>::try_from(v).ok())
            .map(crate::mapping::guid_string)
            .ok_or_else(|| err(format!("{dc} has no readable invocationId")))?;
        Ok(UsnPosition {
            usn,
            dc,
            invocation_id,
            naming_context,
        })
    }

    /// Closes the session politely.
    pub(crate) async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }
}

/// Where an AD domain controller's database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsnPosition {
    pub usn: u64,
    pub dc: String,
    pub invocation_id: String,
    /// The domain's root: deleted objects move to its `CN=Deleted Objects`, so changes are
    /// looked for from there, whatever the configured bases.
    pub naming_context: String,
}

/// Why no next item came.
enum Late {
    /// The search's deadline passed.
    Deadline,
    /// No answer within the per-answer timeout, or the operation failed.
    Failed(String),
}

/// The next item of a search, within the per-answer `timeout` and the search's `deadline`.
async fn next_within(
    stream: &mut ldap3::SearchStream<'_, String, Vec<String>>,
    timeout: Duration,
    deadline: tokio::time::Instant,
    verdict: &super::wire::Verdict,
) -> Result<Option<ldap3::ResultEntry>, Late> {
    let wait = timeout.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
    match tokio::time::timeout(wait, stream.next()).await {
        Ok(Ok(item)) => Ok(item),
        Ok(Err(e)) => Err(Late::Failed(op_error(e, verdict))),
        Err(_) if tokio::time::Instant::now() >= deadline => Err(Late::Deadline),
        Err(_) => Err(Late::Failed(
            "no answer within ldap.timeout_secs".to_string(),
        )),
    }
}

/// One answer of a search: an entry the relay decoded, something ldap3 passed on (an entry it
/// decoded, a reference, an intermediate message), or the end of ldap3's stream.
enum Answer {
    Entry(RawEntry),
    Item(ldap3::ResultEntry),
    Done,
}

/// The next answer of a search whose entries the relay may divert, within the per-answer
/// timeout and the search's deadline.
async fn next_answer(
    stream: &mut ldap3::SearchStream<'_, String, Vec<String>>,
    entries: &mut super::wire::Entries,
    timeout: Duration,
    deadline: tokio::time::Instant,
    verdict: &super::wire::Verdict,
) -> Result<Answer, Late> {
    let wait = timeout.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
    let next = async {
        tokio::select! {
            // Entries first: the relay waits while their channel is full.
            biased;
            Some(entry) = entries.recv() => Ok(Answer::Entry(entry)),
            item = stream.next() => match item {
                Ok(Some(item)) => Ok(Answer::Item(item)),
                Ok(None) => Ok(Answer::Done),
                Err(e) => Err(Late::Failed(op_error(e, verdict))),
            },
        }
    };
    match tokio::time::timeout(wait, next).await {
        Ok(answer) => answer,
        Err(_) if tokio::time::Instant::now() >= deadline => Err(Late::Deadline),
        Err(_) => Err(Late::Failed(
            "no answer within ldap.timeout_secs".to_string(),
        )),
    }
}

/// Empty pages in a row, each with a cookie for another, after which a search is taken for
/// one that never ends (AD can send a few empty pages while it scans a large index).
const MAX_EMPTY_PAGES: u32 = 1000;

/// What a directory read (a search and the range reads that complete its entries) may still
/// take: a server that hands out ranges one value at a time cannot make it endless.
pub(crate) struct ReadBudget {
    deadline: tokio::time::Instant,
    bytes_left: u64,
    limit: Duration,
    max_bytes: u64,
}

impl ReadBudget {
    /// Takes `bytes` from the budget.
    pub(crate) fn spend(&mut self, bytes: u64) {
        self.bytes_left = self.bytes_left.saturating_sub(bytes);
    }

    /// An error naming `what` once the time or the bytes are spent.
    pub(crate) fn check(&self, what: &str) -> Result<(), String> {
        if tokio::time::Instant::now() >= self.deadline {
            return Err(format!(
                "{what} did not end within ldap.search_time_limit_secs ({}s) of its search",
                self.limit.as_secs()
            ));
        }
        if self.bytes_left == 0 {
            return Err(format!(
                "{what} brought more than ldap.max_read_mib ({} MiB) with its search",
                self.max_bytes / (1024 * 1024)
            ));
        }
        Ok(())
    }
}

/// What one search returned.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SearchStats {
    pub entries: u64,
    /// Of the entries, those the relay decoded (all of them, unless a decoder refused one or
    /// diversion stopped).
    pub by_relay: u64,
    pub references: u64,
    /// The size of the entries (see `RawEntry::size`).
    pub bytes: u64,
}
