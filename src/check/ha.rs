//! `check` with `[ha]`: the lease entry as the gateways will find it (read only: whether the
//! bind DN may write it shows at the first renewal, except on AD, which says so itself), and
//! with several servers in `ldap.url`, whether each answers.

use super::Finding;
use crate::config::{Config, HaConfig, LdapConfig, Profile};
use crate::source::ldap::Session;
use crate::source::lease;

pub(super) async fn check(cfg: &Config) -> Vec<Finding> {
    let mut out = servers(&cfg.ldap).await;
    if let Some(ha) = &cfg.ha {
        out.push(lease_line(&cfg.ldap, ha).await);
    }
    out
}

/// With several servers: one line each (a sync would go on to the next, silently).
async fn servers(l: &LdapConfig) -> Vec<Finding> {
    if l.servers.len() < 2 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, server) in l.servers.iter().enumerate() {
        let one = LdapConfig {
            url: server.clone(),
            servers: vec![server.clone()],
            ..l.clone()
        };
        out.push(match Session::open(&one).await {
            Ok(s) => {
                s.close().await;
                Finding::ok("servers", format!("{server} (server {} of ldap.url) answers", i + 1))
            }
            Err(e) => Finding::warn(
                "servers",
                format!("{server} (server {} of ldap.url) does not answer: {e}", i + 1),
                "the gateway goes on with the next server, but has one fewer to fall back on: bring it back or take it out of ldap.url",
            ),
        });
    }
    out
}

async fn lease_line(l: &LdapConfig, ha: &HaConfig) -> Finding {
    let dn = &ha.lease_dn;
    let mut s = match Session::open(l).await {
        Ok(s) => s,
        Err(e) => {
            return Finding::fail(
                "ha",
                format!("cannot read the lease {dn}: {e}"),
                "see the directory line",
            )
        }
    };
    let line = match lease::read(&mut s, dn).await {
        Ok(Some(observed)) => {
            let writable = writable(&mut s, dn, l.profile).await;
            match (observed.lease(), writable) {
                (_, Some(false)) => Finding::fail(
                    "ha",
                    format!("the bind DN may not write the description of the lease {dn}"),
                    "grant it Read/Write Property on description of that object (README, High availability)",
                ),
                (Some(v), _) => Finding::ok(
                    "ha",
                    format!(
                        "lease {dn}: {} (generation {}); this gateway is {}{}",
                        v.holder.as_deref().map_or("free".to_string(), |h| format!("held by {h}")),
                        v.generation,
                        ha.instance,
                        if writable.is_none() {
                            "; write access shows at the first renewal (check writes nothing)"
                        } else {
                            ""
                        }
                    ),
                ),
                (None, _) => Finding::warn(
                    "ha",
                    format!(
                        "the lease {dn} holds {} value(s) that are not a lease",
                        observed.values.len()
                    ),
                    "nothing to do if this is the lease entry: the first gateway to take it over replaces them (after lease_ttl); if it is another entry, name a new one in ha.lease_dn",
                ),
            }
        }
        Ok(None) => {
            let parent = dn
                .split_once(',')
                .map(|(_, p)| p.trim())
                .unwrap_or_default();
            match s.read_entry(parent, &["1.1".to_string()]).await {
                Ok(Some(_)) => Finding::ok(
                    "ha",
                    format!("the lease {dn} does not exist yet: the first gateway to run creates it under {parent}"),
                ),
                Ok(None) => Finding::fail(
                    "ha",
                    format!("the lease {dn} cannot be created: {parent} does not exist"),
                    "create the parent entry, or name a lease_dn under an existing one",
                ),
                Err(e) => Finding::fail("ha", format!("cannot read {parent}: {e}"), "let the bind DN read it"),
            }
        }
        Err(e) => Finding::fail(
            "ha",
            format!("cannot read the lease {dn}: {e}"),
            "let the bind DN read (and write) the lease entry's description",
        ),
    };
    s.close().await;
    line
}

/// AD lists the attributes the bound account may write on an object
/// (`allowedAttributesEffective`); other servers say nothing (`None`).
async fn writable(s: &mut Session, dn: &str, profile: Profile) -> Option<bool> {
    if profile != Profile::ActiveDirectory {
        return None;
    }
    let attr = "allowedAttributesEffective";
    let entry = s.read_entry(dn, &[attr.to_string()]).await.ok()??;
    let texts = entry.texts(attr).ok()?;
    Some(
        texts
            .iter()
            .any(|a| a.eq_ignore_ascii_case(lease::ATTRIBUTE)),
    )
}
