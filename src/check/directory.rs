//! The directory: the connection and bind as a sync makes them, its TLS described, the users and
//! groups in scope counted, and the attribute that carries memberships looked for.

use std::time::Instant;

use super::{Finding, Level};
use crate::config::{Config, LdapConfig, Membership, TlsMode};
use crate::source::ldap::Session;
use crate::source::tls_probe::{self, ProbeError, TlsFacts, Trust};
use crate::source::SourceError;

/// A certificate that expires within this many days is a warning.
const EXPIRY_WARNING_DAYS: i32 = 30;

pub(super) async fn check(cfg: &Config) -> Vec<Finding> {
    let l = &cfg.ldap;
    let mut out = Vec::new();
    let started = Instant::now();
    let session = Session::open(l).await;
    let took = started.elapsed().as_millis();
    // The TLS is described whether or not the connection went through: a certificate that
    // fails is the likeliest reason it did not.
    out.extend(tls(l).await);
    let mut session = match session {
        Ok(s) => {
            let who = l
                .bind_dn
                .as_deref()
                .map_or_else(|| "anonymously".to_string(), |dn| format!("as {dn}"));
            out.insert(
                0,
                Finding::ok(
                    "directory",
                    format!("{} reached and bound {who} in {took} ms", s.server()),
                ),
            );
            s
        }
        Err(e) => {
            out.insert(0, connect_failure(l, &e));
            return out;
        }
    };
    let users = count(&mut session, &l.user_base, &l.user_filter).await;
    let groups = count(&mut session, &l.group_base, &l.group_filter).await;
    out.push(scope_line("users", &l.user_base, &l.user_filter, &users));
    out.push(scope_line(
        "groups",
        &l.group_base,
        &l.group_filter,
        &groups,
    ));
    if let (Ok(users), Ok(groups)) = (users, groups) {
        if let Some(f) = memberships(cfg, &mut session, users, groups).await {
            out.push(f);
        }
    }
    session.close().await;
    out
}

fn connect_failure(l: &LdapConfig, e: &SourceError) -> Finding {
    let text = e.to_string();
    let fix = match e {
        _ if text.contains("no answer within") || text.contains("no TLS handshake within") => {
            "the server takes connections but does not answer: check the port in ldap.url (LDAPS 636, LDAP 389, AD global catalog 3269/3268) and that the directory server is healthy"
        }
        SourceError::Bind { .. } => {
            "check ldap.bind_dn and the bind password (an AD account may also be locked or expired)"
        }
        SourceError::Tls { .. } => {
            "check ldap.ca_file: it must hold the CA that signed the server's certificate"
        }
        _ if l.tls != TlsMode::Plain && text.contains("certificate") => {
            "put the CA that signed the server's certificate in ldap.ca_file, and name the server in ldap.url as its certificate does (the tls line says how)"
        }
        _ => "check ldap.url (host and port), that the server runs, and that no firewall is in the way",
    };
    Finding::fail("directory", text, fix)
}

/// The line for plain LDAP: fine on this machine's loopback, but not to a domain controller
/// (as the config's rule has it), nor over a network.
fn plain(url: &str, profile: crate::config::Profile) -> Finding {
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let on_loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if on_loopback && profile != crate::config::Profile::ActiveDirectory {
        Finding::ok("tls", "none (plain LDAP on this machine's loopback)")
    } else {
        Finding::warn(
            "tls",
            "none: the bind password and every entry cross the network in clear",
            "use ldaps:// or set ldap.starttls = true (AD: LDAPS on port 636)",
        )
    }
}

/// The TLS line: what was negotiated and who vouched for the certificate.
async fn tls(l: &LdapConfig) -> Vec<Finding> {
    match tls_probe::probe(l).await {
        Ok(None) => vec![plain(&l.url, l.profile)],
        Ok(Some(facts)) => describe(l.tls_verify, &facts),
        // No connection at all: the directory line says why.
        Err(ProbeError::Unreachable) => Vec::new(),
        Err(ProbeError::NoTls(e)) => vec![Finding::fail(
            "tls",
            format!("no TLS handshake: {e}"),
            "check ldap.url: LDAPS (ldaps://, port 636) or StartTLS (ldap://, port 389) as the server offers",
        )],
    }
}

/// One line: what was negotiated, the certificate, and the verdict (the worst of its
/// verification and its expiry), with what to do about each thing wrong.
fn describe(tls_verify: bool, f: &TlsFacts) -> Vec<Finding> {
    let names = if f.names.is_empty() {
        String::new()
    } else {
        format!(" (names: {})", f.names.join(", "))
    };
    let mut line = format!(
        "{} {}, certificate {}{names}, issued by {}, valid until {} ({} left)",
        f.protocol,
        f.cipher,
        f.subject,
        f.issuer,
        f.not_after,
        days(f.days_left)
    );
    let mut level = Level::Ok;
    let mut fixes = Vec::new();
    match &f.verified {
        Ok(Trust::CaFile(root)) => {
            line.push_str(&format!(", verified by {root} from ldap.ca_file"))
        }
        Ok(Trust::System(root)) => line.push_str(&format!(
            ", verified by {root} from the system's trust store"
        )),
        Err(why) => {
            let fix = if why.contains("mismatch") {
                format!(
                    "name the server in ldap.url as its certificate does{}",
                    if f.names.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", f.names.join(" or "))
                    }
                )
            } else if why.contains("expired") {
                "renew the server's certificate".to_string()
            } else {
                "put the CA that signed it in ldap.ca_file".to_string()
            };
            if tls_verify {
                line.push_str(&format!("; it does not verify: {why}"));
                level = Level::Fail;
                fixes.push(fix);
            } else {
                // The connection works: a risk to take away, not a failure.
                line.push_str(&format!(
                    "; not verified (ldap.tls_verify = false), and it would fail: {why}"
                ));
                level = Level::Warn;
                fixes.push(format!("{fix}, then remove ldap.tls_verify = false"));
            }
        }
    }
    let expiry = if f.days_left < 0 && tls_verify {
        Some((
            Level::Fail,
            "the server's certificate has expired: renew it".to_string(),
        ))
    } else if f.days_left < EXPIRY_WARNING_DAYS {
        Some((
            Level::Warn,
            format!(
                "the server's certificate expires in {}: renew it",
                days(f.days_left)
            ),
        ))
    } else {
        None
    };
    if let Some((l, fix)) = expiry {
        level = level.max(l);
        if !fixes.iter().any(|f| f.contains("renew")) {
            fixes.push(fix);
        }
    }
    let fix = fixes.join("; ");
    vec![match level {
        Level::Ok => Finding::ok("tls", line),
        Level::Warn => Finding::warn("tls", line, fix),
        Level::Fail => Finding::fail("tls", line, fix),
    }]
}

fn days(n: i32) -> String {
    if n.abs() == 1 {
        format!("{n} day")
    } else {
        format!("{n} days")
    }
}

/// Entries matching `filter` under `base`, no attributes read.
async fn count(session: &mut Session, base: &str, filter: &str) -> Result<u64, SourceError> {
    let mut n = 0u64;
    session
        .search_paged(base, filter, &["1.1".to_string()], |_| n += 1)
        .await?;
    Ok(n)
}

fn scope_line(
    what: &'static str,
    base: &str,
    filter: &str,
    n: &Result<u64, SourceError>,
) -> Finding {
    let key = if what == "users" { "user" } else { "group" };
    match n {
        Ok(0) if what == "users" => Finding::warn(
            what,
            format!("no entry under {base} matches {filter}: a sync would find nobody"),
            format!("check ldap.{key}_base and ldap.{key}_filter"),
        ),
        Ok(0) => Finding::warn(
            what,
            format!("no entry under {base} matches {filter}: users would be synced without groups"),
            format!("check ldap.{key}_base and ldap.{key}_filter"),
        ),
        Ok(n) => Finding::ok(what, format!("{n} in scope (under {base}, {filter})")),
        Err(e) if e.to_string().contains("max_entries") => Finding::fail(
            what,
            e.to_string(),
            "raise ldap.max_entries above the number of entries in scope (it bounds what one search may return)",
        ),
        Err(e) => Finding::fail(
            what,
            e.to_string(),
            format!("check ldap.{key}_base and ldap.{key}_filter, and that the bind account may read there"),
        ),
    }
}

/// Whether the attribute that carries memberships is there to be read.
async fn memberships(
    cfg: &Config,
    session: &mut Session,
    users: u64,
    groups: u64,
) -> Option<Finding> {
    if users == 0 || groups == 0 {
        return None;
    }
    // What a sync would use: on 389-DS, unless set, the groups' member values.
    let chosen = crate::engine::membership_for_server(session, &cfg.ldap)
        .await
        .unwrap_or(std::borrow::Cow::Borrowed(&cfg.ldap));
    let l: &LdapConfig = &chosen;
    let (base, filter, attr, of, whole) = match l.membership {
        Membership::MemberOf => (
            &l.user_base,
            &l.user_filter,
            &cfg.mapping.member_of_attribute,
            "users",
            users,
        ),
        Membership::Member => (
            &l.group_base,
            &l.group_filter,
            &cfg.mapping.member_attribute,
            "groups",
            groups,
        ),
    };
    // A filter written without its parentheses (`objectClass=user`) is one term all the same.
    let term = if filter.trim_start().starts_with('(') {
        filter.to_string()
    } else {
        format!("({filter})")
    };
    let with = format!("(&{term}({attr}=*))");
    Some(match count(session, base, &with).await {
        Ok(0) if l.membership == Membership::MemberOf => Finding::warn(
            "membership",
            format!("none of the {users} users carries {attr}, though {groups} groups are in scope: no user would be put in a group"),
            "the server may not keep memberOf (OpenLDAP: load the memberof overlay); or set ldap.membership = \"member\" to read the groups' members",
        ),
        Ok(0) => Finding::warn(
            "membership",
            format!("none of the {groups} groups lists a member in {attr}"),
            "check mapping.member_attribute (groupOfNames: member, groupOfUniqueNames: uniqueMember, posixGroup: memberUid)",
        ),
        Ok(n) => Finding::ok(
            "membership",
            format!("{n} of the {whole} {of} carry {attr} (ldap.membership = \"{}\")", match l.membership {
                Membership::MemberOf => "memberOf",
                Membership::Member => "member",
            }),
        ),
        Err(e) => Finding::warn(
            "membership",
            format!("cannot look for {attr}: {e}"),
            format!("check that the bind account may read {attr}"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Level;

    fn facts(days_left: i32, verified: Result<Trust, String>) -> TlsFacts {
        TlsFacts {
            protocol: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            subject: "CN=dc1.corp.example".into(),
            issuer: "CN=Corp Issuing CA".into(),
            names: vec!["dc1.corp.example".into()],
            not_after: "Mar  1 00:00:00 2027 GMT".into(),
            days_left,
            verified,
        }
    }

    fn levels(f: &[Finding]) -> Vec<Level> {
        f.iter().map(|f| f.level).collect()
    }

    #[test]
    fn a_certificate_is_ok_until_a_month_before_it_expires_and_fails_once_expired() {
        let by_file = || Ok(Trust::CaFile("CN=Corp Root".into()));
        let ok = describe(true, &facts(93, by_file()));
        assert_eq!(levels(&ok), [Level::Ok]);
        assert!(ok[0].detail.contains("(93 days left)"), "{ok:?}");
        assert!(
            ok[0]
                .detail
                .ends_with("verified by CN=Corp Root from ldap.ca_file"),
            "{ok:?}"
        );
        let system = describe(true, &facts(93, Ok(Trust::System("CN=Public Root".into()))));
        assert!(
            system[0].detail.ends_with("from the system's trust store"),
            "{system:?}"
        );
        let soon = describe(true, &facts(29, by_file()));
        assert_eq!(levels(&soon), [Level::Warn]);
        assert_eq!(
            soon[0].fix.as_deref(),
            Some("the server's certificate expires in 29 days: renew it")
        );
        assert_eq!(
            levels(&describe(true, &facts(-1, by_file()))),
            [Level::Fail]
        );
        assert!(describe(true, &facts(1, by_file()))[0]
            .detail
            .contains("(1 day left)"));
    }

    #[test]
    fn plain_ldap_is_fine_only_on_loopback_and_never_to_a_domain_controller() {
        use crate::config::Profile::{ActiveDirectory, OpenLdap};
        for url in [
            "ldap://127.0.0.1:389",
            "ldap://localhost",
            "ldap://[::1]:389",
        ] {
            assert_eq!(plain(url, OpenLdap).level, Level::Ok, "{url}");
            assert_eq!(plain(url, ActiveDirectory).level, Level::Warn, "{url}");
        }
        for url in [
            "ldap://ldap.corp.example.com",
            "ldap://10.0.0.5:389",
            "ldap://[fd00::1]",
        ] {
            let f = plain(url, OpenLdap);
            assert_eq!(f.level, Level::Warn, "{url}");
            assert!(f.detail.contains("in clear"), "{url}");
        }
    }

    #[test]
    fn an_unverified_certificate_fails_unless_verification_is_off_on_purpose() {
        let bad = || Err("unable to get local issuer certificate".to_string());
        let failed = describe(true, &facts(93, bad()));
        assert_eq!(levels(&failed), [Level::Fail]);
        assert_eq!(
            failed[0].fix.as_deref(),
            Some("put the CA that signed it in ldap.ca_file")
        );
        let off = describe(false, &facts(93, bad()));
        assert_eq!(levels(&off), [Level::Warn]);
        assert!(
            off[0]
                .detail
                .contains("it would fail: unable to get local issuer"),
            "{off:?}"
        );
        assert!(off[0]
            .fix
            .as_deref()
            .is_some_and(|f| f.ends_with("remove ldap.tls_verify = false")));
        // The name is what is wrong: the fix names the certificate's names, not the CA.
        let mismatch = describe(true, &facts(93, Err("hostname mismatch".into())));
        assert_eq!(
            mismatch[0].fix.as_deref(),
            Some("name the server in ldap.url as its certificate does: dc1.corp.example")
        );
        // Expired with verification off: the connection works, a warning.
        let expired_off = describe(false, &facts(-3, Err("certificate has expired".into())));
        assert_eq!(levels(&expired_off), [Level::Warn]);
        assert_eq!(
            expired_off[0].fix.as_deref(),
            Some("renew the server's certificate, then remove ldap.tls_verify = false")
        );
    }
}
