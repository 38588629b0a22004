//! The target: its preflight as a sync makes it (reachable, what it declares of itself), the
//! credentials proven by a read, and the attributes its schema requires that the mapping would
//! not send. Nothing is written to it.

use std::time::Instant;

use super::Finding;
use crate::config::{Config, TargetKind};
use crate::model::User;
use crate::target::{AnyTarget, Target, TargetError, TargetErrorKind};

pub(super) async fn check(cfg: &Config, t: &AnyTarget) -> Vec<Finding> {
    let started = Instant::now();
    let preflight = t.preflight().await;
    let took = started.elapsed().as_millis();
    // The target is judged by a read that must succeed, not by the discovery documents (which
    // a provider may not serve): an error page answered to everything is no target.
    let read = match preflight {
        Ok(()) => credentials(cfg, t).await,
        Err(e) => Err(e),
    };
    let proof = match read {
        Ok(proof) => proof,
        Err(e) if refused(&e) => {
            // It answered (or its token endpoint did): what it refused is the credentials.
            let mut f = failure(t, &e);
            f.check = "credentials";
            return vec![
                Finding::ok("target", format!("{} answers", t.describe())),
                f,
            ];
        }
        Err(e) => return vec![failure(t, &e)],
    };
    let declared = t.declared();
    let said = if declared.abilities.is_empty() {
        String::new()
    } else {
        format!("; it declares {}", declared.abilities.join(", "))
    };
    let mut out = vec![
        Finding::ok(
            "target",
            format!("{} answered in {took} ms{said}", t.describe()),
        ),
        Finding::ok("credentials", proof),
    ];
    let unsent = t.unsent_required(&sample(cfg));
    if !unsent.is_empty() {
        out.push(Finding::warn(
            "attributes",
            format!(
                "the target's User schema requires {}, which the mapping does not send: it may refuse every create",
                unsent.join(", ")
            ),
            "map them in [mapping] (a SCIM path not built in goes in [mapping.custom])",
        ));
    } else if !declared.user_required.is_empty() {
        out.push(Finding::ok(
            "attributes",
            format!(
                "every attribute the User schema requires is sent ({})",
                declared.user_required.join(", ")
            ),
        ));
    }
    for q in t.quirks() {
        out.push(Finding::ok("quirk", format!("{}: {}", q.found, q.handling)));
    }
    out
}

/// The credentials were refused: by the target, or by the token endpoint.
fn refused(e: &TargetError) -> bool {
    matches!(e.status(), Some(401 | 403)) || matches!(e.kind, TargetErrorKind::Auth(_))
}

fn failure(t: &AnyTarget, e: &TargetError) -> Finding {
    let fix = match e.status() {
        _ if matches!(e.kind, TargetErrorKind::Auth(_)) => {
            "the token endpoint refused: check target.auth.token_url, client_id and the client secret"
        }
        Some(401) => "the credentials were refused: check [target.auth] (token, secret, or the token URL's client)",
        Some(403) => "the credentials lack a right: give the token or client the provisioning scope",
        Some(404) => "check target.url: it must be the SCIM base (the folder of /Users), or the REST API's base",
        _ if e.is_transport() => {
            "check target.url, that the provider is up, the proxy and firewall, and target.ca_file for an internal CA"
        }
        _ => "check target.url and [target.auth]",
    };
    Finding::fail("target", format!("{}: {e}", t.describe()), fix)
}

/// Credentials proven by a read: the page of users a REST API's preflight read, or the look-up
/// of a userName nobody has. What proved them, or why the read failed.
async fn credentials(cfg: &Config, t: &AnyTarget) -> Result<String, TargetError> {
    if cfg.target.kind != TargetKind::Scim && t.can_list() {
        return Ok("accepted: the preflight read a page of users with them".into());
    }
    // A REST API that cannot list has a look-up by name (the config requires one of the two).
    let nobody = format!(
        "dirbridge-check-{}",
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    match t.find_user(&nobody).await? {
        None => Ok(format!(
            "accepted: a look-up of the userName {nobody} was answered (nobody has it)"
        )),
        Some(u) => Ok(format!(
            "accepted; a look-up of the unused userName {nobody} came back with {}",
            u.user.user_name
        )),
    }
}

/// A user with every mapped field set: what the target would be sent at most.
fn sample(cfg: &Config) -> User {
    let m = &cfg.mapping;
    let set = |mapped: bool| mapped.then(|| "x".into());
    let mut u = User {
        user_name: "x".into(),
        given_name: set(!m.given_name.is_unmapped()),
        family_name: set(!m.family_name.is_unmapped()),
        display_name: set(!m.display_name.is_unmapped()),
        email: set(!m.email.is_unmapped()),
        active: true,
        title: set(!m.title.is_unmapped()),
        department: set(!m.department.is_unmapped()),
        employee_number: set(!m.employee_number.is_unmapped()),
        manager: None,
        custom: Default::default(),
    };
    for (path, _) in &m.custom {
        u.custom.insert(path.clone(), "x".into());
    }
    u
}
