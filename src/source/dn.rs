//! DN comparison. The same DN comes back from a server in different spellings (`memberOf` values,
//! `member` values, entry DNs), so DNs are compared in a normal form.

/// Splits an AD extended DN (`<GUID=...>;<SID=...>;CN=...`, as returned with the extended-DN
/// control) into the object's GUID and the plain DN. A plain DN comes back as is.
pub(crate) fn split_extended(dn: &str) -> (Option<String>, &str) {
    let mut rest = dn;
    let mut guid = None;
    while let Some(after) = rest.strip_prefix('<') {
        let Some(end) = after.find('>') else { break };
        let (component, tail) = (&after[..end], &after[end + 1..]);
        if let Some(g) = component
            .strip_prefix("GUID=")
            .or_else(|| component.strip_prefix("guid="))
        {
            guid = Some(g.to_ascii_lowercase());
        }
        rest = tail.strip_prefix(';').unwrap_or(tail);
    }
    (guid, rest)
}

/// The reference token of an object known by its GUID, as [`normalize`] returns it for an
/// extended DN: references by GUID survive renames and moves.
pub(crate) fn guid_token(guid: &str) -> String {
    format!("<guid={}>", guid.to_ascii_lowercase())
}

/// The comparable form of a DN-valued attribute value: the GUID token for an extended DN,
/// else the DN lower-cased with the spaces around its separators removed (escapes kept).
/// Enough for the case-insensitive attributes DNs are made of in practice (cn, ou, dc, uid).
pub(crate) fn normalize(dn: &str) -> String {
    if let (Some(guid), _) = split_extended(dn) {
        return guid_token(&guid);
    }
    normalize_plain(dn)
}

/// One pass into one string (the DNs of every membership of every user go through here).
fn normalize_plain(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut rdn = String::with_capacity(dn.len());
    let mut chars = dn.chars();
    loop {
        rdn.clear();
        let mut last = true;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    rdn.push('\\');
                    if let Some(n) = chars.next() {
                        push_lower(&mut rdn, n);
                    }
                }
                ',' | ';' => {
                    last = false;
                    break;
                }
                _ => push_lower(&mut rdn, c),
            }
        }
        push_rdn(&mut out, &rdn);
        if last {
            return out;
        }
        out.push(',');
    }
}

fn push_lower(out: &mut String, c: char) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
    } else {
        out.extend(c.to_lowercase());
    }
}

/// An RDN's attribute-value assertions with the spaces around `=` and `+` removed.
fn push_rdn(out: &mut String, rdn: &str) {
    for (i, ava) in rdn.split('+').enumerate() {
        if i > 0 {
            out.push('+');
        }
        match ava.split_once('=') {
            Some((t, v)) => {
                out.push_str(t.trim());
                out.push('=');
                out.push_str(v.trim());
            }
            None => out.push_str(ava.trim()),
        }
    }
}

/// The value of the first RDN (`Engineering` for `cn=Engineering,ou=groups,...`), unescaped
/// for the common escapes.
pub(crate) fn first_rdn_value(dn: &str) -> Option<String> {
    let mut out = String::new();
    let mut in_value = false;
    let mut chars = dn.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_value => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '=' if !in_value => in_value = true,
            ',' | '+' if in_value => break,
            _ if in_value => out.push(c),
            _ => {}
        }
    }
    let v = out.trim().to_string();
    (!v.is_empty()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_dn_compare_equal() {
        assert_eq!(
            normalize("CN=Engineering, OU=Groups,DC=Example,DC=org"),
            normalize("cn=engineering,ou=groups,dc=example,dc=org")
        );
        assert_ne!(normalize("cn=a\\,b,dc=x"), normalize("cn=a,cn=b,dc=x"));
    }

    #[test]
    fn extended_dns_are_referenced_by_guid() {
        let ext = "<GUID=303162A8-3274-4125-8a40-1784251b8fa9>;<SID=S-1-5-21-1-2-3-1104>;CN=Eng,OU=Staff,DC=corp";
        let (guid, plain) = split_extended(ext);
        assert_eq!(
            guid.as_deref(),
            Some("303162a8-3274-4125-8a40-1784251b8fa9")
        );
        assert_eq!(plain, "CN=Eng,OU=Staff,DC=corp");
        assert_eq!(
            normalize(ext),
            guid_token("303162a8-3274-4125-8a40-1784251b8fa9")
        );
        assert_eq!(split_extended("CN=x,DC=y"), (None, "CN=x,DC=y"));
    }

    /// The first, plainer form of [`normalize_plain`]: the one-pass version must agree.
    fn normalize_reference(dn: &str) -> String {
        let mut rdns: Vec<String> = Vec::new();
        let mut current = String::new();
        let mut chars = dn.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    current.push('\\');
                    if let Some(n) = chars.next() {
                        current.extend(n.to_lowercase());
                    }
                }
                ',' | ';' => rdns.push(std::mem::take(&mut current)),
                _ => current.extend(c.to_lowercase()),
            }
        }
        rdns.push(current);
        rdns.iter()
            .map(|rdn| {
                rdn.split('+')
                    .map(|ava| match ava.split_once('=') {
                        Some((t, v)) => format!("{}={}", t.trim(), v.trim()),
                        None => ava.trim().to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn one_pass_normalize_agrees(dn in "([a-zA-Z =,;+\\\\\u{e9}\u{130}\u{3a3}\u{2003}\u{a0}]|[a-z]{1,5}=[A-Za-z ]{0,6}){0,12}") {
            proptest::prop_assert_eq!(normalize_plain(&dn), normalize_reference(&dn));
        }
    }

    #[test]
    fn first_rdn_value_unescapes() {
        assert_eq!(
            first_rdn_value("cn=Sales\\, EMEA,ou=g,dc=x").as_deref(),
            Some("Sales, EMEA")
        );
        assert_eq!(first_rdn_value("cn=Eng,dc=x").as_deref(), Some("Eng"));
        assert_eq!(first_rdn_value(""), None);
    }
}
