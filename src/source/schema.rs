//! The attribute names the directory's schema defines (RFC 4512 §4.2: the `attributeTypes` of
//! the subschema entry the root DSE names), so a mapping that names an attribute the directory
//! does not have (a typo) is an error rather than a field that silently stays empty.

use std::collections::BTreeSet;

use super::ldap::Session;
use super::SourceError;

/// The names (and aliases) in one `attributeTypes` value, e.g.
/// `( 2.5.4.3 NAME ( 'cn' 'commonName' ) SUP name )`, lower-cased.
pub(crate) fn names_of(definition: &str) -> Vec<String> {
    let Some(at) = definition.find(" NAME ") else {
        return Vec::new();
    };
    let rest = definition[at + 6..].trim_start();
    let list: &str = if let Some(inner) = rest.strip_prefix('(') {
        inner.split(')').next().unwrap_or_default()
    } else {
        // One quoted name: `'uid'`.
        rest.strip_prefix('\'')
            .and_then(|r| r.find('\''))
            .map(|end| &rest[..end + 2])
            .unwrap_or_default()
    };
    list.split('\'')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, n)| n.trim().to_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

impl Session {
    /// The schema's attribute names, or `None` when the server does not let the bind DN read
    /// its subschema (nothing is checked then).
    pub(crate) async fn attribute_names(
        &mut self,
    ) -> Result<Option<BTreeSet<String>>, SourceError> {
        let root = self
            .read_entry("", &["subschemaSubentry".to_string()])
            .await?;
        let Some(sub) = root.and_then(|r| r.texts("subschemaSubentry").ok()?.into_iter().next())
        else {
            return Ok(None);
        };
        let Some(entry) = self
            .read_entry(&sub, &["attributeTypes".to_string()])
            .await
            .ok()
            .flatten()
        else {
            return Ok(None);
        };
        let defs = entry.texts("attributeTypes").unwrap_or_default();
        if defs.is_empty() {
            return Ok(None);
        }
        Ok(Some(defs.iter().flat_map(|d| names_of(d)).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_are_read() {
        assert_eq!(
            names_of(
                "( 2.5.4.3 NAME ( 'cn' 'commonName' ) DESC 'RFC4519: common name(s)' SUP name )"
            ),
            ["cn", "commonname"]
        );
        assert_eq!(
            names_of("( 0.9.2342.19200300.100.1.1 NAME 'uid' EQUALITY caseIgnoreMatch )"),
            ["uid"]
        );
        assert_eq!(
            names_of("( 1.2.840.113556.1.4.221 NAME 'sAMAccountName' SYNTAX '1.3.6.1.4.1.1466.115.121.1.15' )"),
            ["samaccountname"]
        );
        assert!(names_of("( 1.2.3 DESC 'no name' )").is_empty());
    }
}
