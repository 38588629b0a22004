//! The lease as `dirbridge status` shows it: one read.

use crate::config::{HaConfig, LdapConfig};
use crate::source::ldap::Session;
use crate::source::lease;

/// The lease as `dirbridge status` shows it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct HolderView {
    pub instance: String,
    pub holder: Option<String>,
    pub generation: Option<u64>,
    pub problem: Option<String>,
    pub text: String,
}

/// Reads the lease once (bounded by `ldap.timeout_secs`), for `dirbridge status`.
pub(crate) async fn read_holder(ldap: &LdapConfig, ha: &HaConfig) -> HolderView {
    let read = async {
        let mut s = Session::open(ldap).await?;
        let o = lease::read(&mut s, &ha.lease_dn).await;
        s.close().await;
        o
    };
    let read = tokio::time::timeout(ldap.timeout, read).await;
    let me = &ha.instance;
    let (holder, generation, problem, text) = match read {
        Ok(Ok(Some(o))) => match o.lease() {
            Some(l) => {
                let text = match &l.holder {
                    Some(h) => format!(
                        "HA: {h} holds the HA lease (generation {}){}",
                        l.generation,
                        if h == me {
                            "; that is this gateway"
                        } else {
                            ""
                        }
                    ),
                    None => format!("HA: the lease is free (generation {})", l.generation),
                };
                (l.holder, Some(l.generation), None, text)
            }
            None => {
                let why = format!("the lease entry {} holds no lease value", ha.lease_dn);
                (None, None, Some(why.clone()), format!("HA: {why}"))
            }
        },
        Ok(Ok(None)) => {
            let why = format!(
                "the lease entry {} does not exist yet (the first gateway to run creates it)",
                ha.lease_dn
            );
            (None, None, Some(why.clone()), format!("HA: {why}"))
        }
        Ok(Err(e)) => (
            None,
            None,
            Some(e.to_string()),
            format!("HA: cannot read the lease: {e}"),
        ),
        Err(_) => {
            let why = "the directory did not answer in time".to_string();
            (
                None,
                None,
                Some(why.clone()),
                format!("HA: cannot read the lease: {why}"),
            )
        }
    };
    HolderView {
        instance: me.clone(),
        holder,
        generation,
        problem,
        text,
    }
}
