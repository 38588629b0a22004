//! What the directory's answers and ldap3's errors mean, in words for an administrator: result
//! codes, AD's bind sub-codes, and a server's own text made one bounded line.

/// Text for the LDAP result codes an administrator is most likely to meet.
fn rc_meaning(rc: u32) -> &'static str {
    match rc {
        1 => "operations error",
        3 => "time limit exceeded",
        4 => "size limit exceeded",
        10 => "referral: the entries are on another server, and referrals are not followed (point ldap.url at the server that holds the base)",
        8 => "stronger authentication required (use LDAPS or StartTLS)",
        11 => "administrative limit exceeded",
        12 => "unavailable critical extension",
        32 => "no such object (check the base DN)",
        34 => "invalid DN syntax",
        48 => "inappropriate authentication",
        49 => "invalid credentials (wrong bind DN or password)",
        50 => "insufficient access rights",
        51 => "server busy",
        52 => "server unavailable",
        53 => "unwilling to perform",
        87 => "filter error",
        _ => "LDAP error",
    }
}

/// Active Directory's sub-code in an invalid-credentials (49) diagnostic, e.g.
/// `80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 52e, v4563`.
fn ad_bind_detail(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    let code = lower
        .split("data ")
        .nth(1)?
        .split([',', ' '])
        .next()?
        .trim();
    Some(match code {
        "525" => "AD: no such user",
        "52e" => "AD: wrong password (or user name)",
        "530" => "AD: logon not permitted at this time",
        "531" => "AD: logon not permitted from this workstation",
        "532" => "AD: password expired",
        "533" => "AD: account disabled",
        "568" => "AD: too many security identifiers",
        "701" => "AD: account expired",
        "773" => "AD: the password must be changed before first logon",
        "775" => "AD: account locked out",
        _ => return None,
    })
}

pub(crate) fn describe(rc: u32, text: &str) -> String {
    let text = printable(text.trim());
    let text = text.as_str();
    if rc == 49 {
        if let Some(detail) = ad_bind_detail(text) {
            return format!("LDAP result 49 ({detail}): {text}");
        }
    }
    if text.is_empty() {
        format!("LDAP result {rc} ({})", rc_meaning(rc))
    } else {
        format!("LDAP result {rc} ({}): {text}", rc_meaning(rc))
    }
}

/// An ldap3 error as the administrator needs it. When the relay closed the connection because
/// of what the server sent, that is the reason, whatever ldap3 saw after; a connection that
/// ended mid-operation says so (ldap3's own texts are "end of stream", "channel closed").
pub(crate) fn op_error(e: ldap3::LdapError, verdict: &super::wire::Verdict) -> String {
    if let Some(why) = verdict.get() {
        return why;
    }
    use ldap3::LdapError as E;
    match e {
        E::EndOfStream | E::ResultRecv { .. } | E::OpSend { .. } | E::MiscSend { .. } => {
            "the connection ended before the answer did (the server closed it, or sent what the LDAP library could not decode)".to_string()
        }
        E::Timeout { .. } => "no answer within ldap.timeout_secs".to_string(),
        e => printable(&e.to_string()),
    }
}

/// A server's text as one bounded line: control characters (newlines, terminal escapes) shown
/// as `?`, at most 300 characters. Result texts and referral URLs are the server's words and
/// must not forge log lines or flood them.
pub(crate) fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(300)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(300).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ad_bind_sub_codes_are_spelled_out() {
        let t = "80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 775, v4563";
        assert!(describe(49, t).contains("account locked out"));
        assert!(describe(49, "... data 52e, v1db1").contains("wrong password"));
        assert!(describe(49, "... data 532, v1db1").contains("password expired"));
        assert!(describe(49, "no sub-code").contains("invalid credentials"));
        assert!(describe(32, "").contains("no such object"));
    }
}
