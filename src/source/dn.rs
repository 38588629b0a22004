//! DN comparison. The same DN comes back from a server in different spellings (`memberOf` values,
//! `member` values, entry DNs), so DNs are compared in a normal form.

/// Lower-cases a DN and removes the spaces around its separators, keeping escaped characters.
/// Enough for the case-insensitive attributes DNs are made of in practice (cn, ou, dc, uid).
pub fn normalize(dn: &str) -> String {
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

/// The value of the first RDN (`Engineering` for `cn=Engineering,ou=groups,...`), unescaped
/// for the common escapes.
pub fn first_rdn_value(dn: &str) -> Option<String> {
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
    fn first_rdn_value_unescapes() {
        assert_eq!(
            first_rdn_value("cn=Sales\\, EMEA,ou=g,dc=x").as_deref(),
            Some("Sales, EMEA")
        );
        assert_eq!(first_rdn_value("cn=Eng,dc=x").as_deref(), Some("Eng"));
        assert_eq!(first_rdn_value(""), None);
    }
}
