//! RFC 4533 content synchronization, refreshAndPersist mode: one long-lived search per scope
//! (users, groups) that first brings a client up to date from its cookie, then keeps sending each
//! change as it happens. This module only turns the protocol into [`SyncEvent`]s; what they mean
//! for the mirror is the engine's business.

pub(crate) mod control;

use ldap3::controls::RawControl;
use ldap3::{Scope, SearchStream};

pub(crate) use control::{EntryState, SyncDone, SyncInfo};

use super::entry::{decode_entry, RawEntry};
use super::ldap::Session;
use super::SourceError;

/// LDAP result code e-syncRefreshRequired: the cookie is too old; start again without one.
pub(crate) const REFRESH_REQUIRED: u32 = 4096;

/// One message of a content synchronization.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SyncEvent {
    /// An entry and its state. `entry` is `None` for Present and Delete (no attributes).
    Entry {
        state: EntryState,
        uuid: Vec<u8>,
        dn: String,
        entry: Option<RawEntry>,
        cookie: Option<Vec<u8>>,
    },
    Info(SyncInfo),
}

/// How a synchronization search ended.
#[derive(Debug)]
pub(crate) enum SyncEnd {
    /// The server finished the search (refreshOnly, or it stopped persisting). Its Sync Done
    /// value is decoded (a malformed one is an error) but its cookie is not used yet: the
    /// search is started again from the last saved cookie.
    Done(#[allow(dead_code)] SyncDone),
    /// The cookie is no longer usable (result 4096): read everything again without it.
    RefreshRequired,
    /// The server refused the sync control on this base (result 12, "unavailable critical
    /// extension": the control is on offer, but not for this database — syncprov loaded for
    /// another one, or a proxy in front). Its words are kept for the log and the status.
    Refused(String),
}

/// A running refreshAndPersist search.
pub(crate) struct PersistSearch {
    stream: SearchStream<'static, String, Vec<String>>,
    /// Told of every message taken, so that the relay holds back what is not (see
    /// `wire::gate`).
    gate: std::sync::Arc<crate::source::wire::Gate>,
    base: String,
    filter: String,
    verdict: crate::source::wire::Verdict,
}

impl std::fmt::Debug for PersistSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistSearch")
            .field("base", &self.base)
            .field("filter", &self.filter)
            .finish()
    }
}

/// The Sync Request control value: `SEQUENCE { mode ENUMERATED, cookie OCTET STRING OPTIONAL }`.
/// A stored cookie as this consumer sends it back: without OpenLDAP's `sid=` part. The server
/// that sent the cookie put its own serverID there; a consumer sending it tells syncprov "I am
/// that server", and syncprov never sends a server the changes that came from it (multi-provider
/// loop prevention). Resumed on another provider of a replicated pair (`ldap.url` with several
/// servers), every change made on the first would be withheld. The gateway is no server: no sid.
fn as_consumer(cookie: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match std::str::from_utf8(cookie) {
        Ok(text) if text.split(',').any(|p| p.starts_with("sid=")) => text
            .split(',')
            .filter(|p| !p.starts_with("sid="))
            .collect::<Vec<_>>()
            .join(",")
            .into_bytes()
            .into(),
        _ => cookie.into(),
    }
}

fn sync_request(cookie: Option<&[u8]>, persist: bool) -> RawControl {
    use ldap3::asn1::{write, ASNTag, Enumerated, OctetString, Sequence, Tag};
    let mut inner = vec![Tag::Enumerated(Enumerated {
        inner: if persist { 3 } else { 1 },
        ..Default::default()
    })];
    if let Some(c) = cookie {
        inner.push(Tag::OctetString(OctetString {
            inner: as_consumer(c).into_owned(),
            ..Default::default()
        }));
    }
    let mut buf = bytes::BytesMut::new();
    // Encoding into memory cannot fail.
    let _ = write::encode_into(
        &mut buf,
        Tag::Sequence(Sequence {
            inner,
            ..Default::default()
        })
        .into_structure(),
    );
    RawControl {
        ctype: control::SYNC_REQUEST_OID.into(),
        crit: true,
        val: Some(buf.to_vec()),
    }
}

impl Session {
    /// Starts a refreshAndPersist search from `cookie` (None: send everything). The search has
    /// no time limit: it is meant to stay open; a dead connection ends it with an error.
    pub(crate) async fn persist(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[String],
        cookie: Option<&[u8]>,
    ) -> Result<PersistSearch, SourceError> {
        let verdict = self.verdict();
        self.routes_settled()
            .await
            .map_err(|reason| SourceError::Search {
                base: base.to_string(),
                filter: filter.to_string(),
                reason,
            })?;
        let gate = self.diversion().gate_next_search();
        let ldap = self.ldap_mut();
        ldap.with_controls(vec![sync_request(cookie, true)]);
        let started = ldap
            .streaming_search(base, Scope::Subtree, filter, attrs.to_vec())
            .await;
        if started.is_err() {
            self.diversion().cancel_next();
        }
        let stream = started.map_err(|e| SourceError::Search {
            base: base.to_string(),
            filter: filter.to_string(),
            reason: format!(
                "cannot start content synchronization: {}",
                crate::source::ldap::op_error(e, &verdict)
            ),
        })?;
        Ok(PersistSearch {
            stream,
            gate,
            base: base.to_string(),
            filter: filter.to_string(),
            verdict,
        })
    }

    /// True when the server says it is 389 Directory Server (root DSE `vendorName` /
    /// `vendorVersion`), whose memberOf includes nested groups.
    pub(crate) async fn is_389ds(&mut self) -> Result<bool, SourceError> {
        let root = self
            .read_entry("", &["vendorName".to_string(), "vendorVersion".to_string()])
            .await?;
        Ok(root.is_some_and(|r| {
            ["vendorName", "vendorVersion"].iter().any(|a| {
                r.texts(a)
                    .unwrap_or_default()
                    .iter()
                    .any(|v| v.starts_with("389"))
            })
        }))
    }

    /// True when the server's root DSE lists the content synchronization control (syncprov).
    pub(crate) async fn supports_syncrepl(&mut self) -> Result<bool, SourceError> {
        let root = self
            .read_entry("", &["supportedControl".to_string()])
            .await?;
        Ok(root
            .map(|r| {
                r.texts("supportedControl")
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c == control::SYNC_REQUEST_OID)
            })
            .unwrap_or(false))
    }
}

impl PersistSearch {
    fn err(&self, reason: String) -> SourceError {
        SourceError::Search {
            base: self.base.clone(),
            filter: self.filter.clone(),
            reason,
        }
    }

    /// The next message; `Ok(None)` when the server ended the search (see [`PersistSearch::end`]).
    /// A lost connection is an error.
    pub(crate) async fn next(&mut self) -> Result<Option<SyncEvent>, SourceError> {
        loop {
            let item = match self.stream.next().await {
                Ok(Some(item)) => {
                    self.gate.took();
                    item
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    let why = crate::source::ldap::op_error(e, &self.verdict);
                    return Err(self.err(format!("content synchronization lost: {why}")));
                }
            };
            if item.is_ref() {
                continue;
            }
            if item.is_intermediate() {
                match control::decode_intermediate(item.0).map_err(|e| self.err(e))? {
                    Some(info) => return Ok(Some(SyncEvent::Info(info))),
                    None => continue,
                }
            }
            let state = item
                .1
                .iter()
                .find(|c| c.1.ctype == control::SYNC_STATE_OID)
                .ok_or_else(|| self.err("an entry came without its Sync State control".into()))?;
            let state = control::decode_state(state.1.val.as_deref().unwrap_or_default())
                .map_err(|e| self.err(e))?;
            let entry = decode_entry(item.0).map_err(|e| self.err(e))?;
            let dn = entry.dn.clone();
            let entry = match state.state {
                EntryState::Add | EntryState::Modify => Some(entry),
                EntryState::Present | EntryState::Delete => None,
            };
            return Ok(Some(SyncEvent::Entry {
                state: state.state,
                uuid: state.uuid,
                dn,
                entry,
                cookie: state.cookie,
            }));
        }
    }

    /// How the search ended, once [`PersistSearch::next`] returned `Ok(None)`.
    pub(crate) async fn end(mut self) -> Result<SyncEnd, SourceError> {
        let res = self.stream.finish().await;
        match res.rc {
            0 => {
                let done = res
                    .ctrls
                    .iter()
                    .find(|c| c.1.ctype == control::SYNC_DONE_OID)
                    .map(|c| control::decode_done(c.1.val.as_deref()))
                    .transpose()
                    .map_err(|e| self.err(e))?
                    .unwrap_or_default();
                Ok(SyncEnd::Done(done))
            }
            REFRESH_REQUIRED => Ok(SyncEnd::RefreshRequired),
            12 => Ok(SyncEnd::Refused(super::ldap::describe(12, &res.text))),
            rc => Err(self.err(super::ldap::describe(rc, &res.text))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::as_consumer;

    #[test]
    fn a_cookie_goes_back_without_the_server_id_it_came_with() {
        let sent = |c: &str| String::from_utf8(as_consumer(c.as_bytes()).into_owned()).unwrap();
        assert_eq!(
            sent("rid=000,sid=001,csn=20261128112516.800285Z#000000#001#000000"),
            "rid=000,csn=20261128112516.800285Z#000000#001#000000"
        );
        assert_eq!(
            sent("rid=000,csn=1#000000#001#000000;2#000000#002#000000,sid=002"),
            "rid=000,csn=1#000000#001#000000;2#000000#002#000000"
        );
        // Cookies of other shapes (or servers) go back as they came.
        assert_eq!(sent("rid=000,csn=x"), "rid=000,csn=x");
        assert_eq!(sent("opaque-389-cookie#12#34"), "opaque-389-cookie#12#34");
        assert_eq!(as_consumer(&[0xff, b's']).as_ref(), &[0xff, b's']);
    }
}
