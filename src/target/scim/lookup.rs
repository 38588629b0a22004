//! Finding the one resource a look-up asks for, without trusting the provider to have applied
//! the filter. A provider that ignores `filter` answers with the first page of everything; the
//! gateway adopts a candidate only when the attribute it looked up really matches, and where
//! filtering is unsupported or untrustworthy it matches against an index of a full listing.

use std::collections::HashMap;

use serde_json::Value;

/// An attribute the gateway looks resources up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Attr {
    /// User `userName`: case-insensitive (RFC 7643 §4.1.1, caseExact false), for ASCII letters
    /// only: Unicode case mapping would let a look-alike (KELVIN SIGN for K) pass for the name.
    UserName,
    /// `externalId`: case-exact (RFC 7643 §3.1).
    ExternalId,
    /// Group `displayName`: compared exactly, so a group merely named alike in another case is
    /// never taken over.
    DisplayName,
}

impl Attr {
    pub(super) fn scim_name(self) -> &'static str {
        match self {
            Attr::UserName => "userName",
            Attr::ExternalId => "externalId",
            Attr::DisplayName => "displayName",
        }
    }

    /// The value as the adoption rule compares it.
    fn normal(self, v: &str) -> String {
        match self {
            Attr::UserName => v.to_ascii_lowercase(),
            Attr::ExternalId | Attr::DisplayName => v.to_string(),
        }
    }

    fn value_of(self, doc: &Value) -> Option<&str> {
        doc.get(self.scim_name()).and_then(Value::as_str)
    }

    /// True when `doc` holds `value` in this attribute, by the adoption rule.
    pub(super) fn matches(self, doc: &Value, value: &str) -> bool {
        self.value_of(doc)
            .is_some_and(|v| self.normal(v) == self.normal(value))
    }

    /// A looser comparison (any case), to tell a provider that compared differently from one
    /// that ignored the filter altogether.
    fn loosely_matches(self, doc: &Value, value: &str) -> bool {
        self.value_of(doc)
            .is_some_and(|v| v.to_lowercase() == value.to_lowercase())
    }
}

/// What a filtered answer says about `attr eq value`.
#[derive(Debug, PartialEq)]
pub(super) enum Pick {
    Found(Value),
    NotFound,
    /// Several resources hold the value: none is adopted.
    Ambiguous(usize),
    /// The answer holds resources the filter cannot have selected: the provider ignored it (or
    /// applied another one), so its answer says nothing about whether the value exists.
    FilterIgnored,
}

pub(super) fn pick(items: Vec<Value>, attr: Attr, value: &str) -> Pick {
    if items.iter().any(|d| !attr.loosely_matches(d, value)) {
        return Pick::FilterIgnored;
    }
    let mut matching: Vec<Value> = items
        .into_iter()
        .filter(|d| attr.matches(d, value))
        .collect();
    match matching.len() {
        0 => Pick::NotFound,
        1 => matching.pop().map(Pick::Found).unwrap_or(Pick::NotFound),
        n => Pick::Ambiguous(n),
    }
}

/// Ids by looked-up value, from one listing of a resource type. Built once per pass where the
/// provider cannot filter; a candidate is read again by id and checked before it is used.
#[derive(Debug)]
pub(super) struct Index {
    by: HashMap<(Attr, String), Vec<String>>,
    pub built: std::time::Instant,
}

impl Index {
    pub(super) fn new(docs: &[Value], attrs: &[Attr]) -> Index {
        let mut index = Index {
            by: HashMap::new(),
            built: std::time::Instant::now(),
        };
        for doc in docs {
            index.insert(doc, attrs);
        }
        index
    }

    /// Adds one listed resource.
    pub(super) fn insert(&mut self, doc: &Value, attrs: &[Attr]) {
        if let Some(id) = doc.get("id").and_then(Value::as_str) {
            self.insert_as(doc, id, attrs);
        }
    }

    /// Adds one resource under `id` (one the gateway just created: what it sent has no id).
    pub(super) fn insert_as(&mut self, doc: &Value, id: &str, attrs: &[Attr]) {
        if id.is_empty() {
            return;
        }
        for &attr in attrs {
            if let Some(v) = attr.value_of(doc) {
                let ids = self.by.entry((attr, attr.normal(v))).or_default();
                if !ids.iter().any(|i| i == id) {
                    ids.push(id.to_string());
                }
            }
        }
    }

    /// The ids whose `attr` holds `value`, by the adoption rule.
    pub(super) fn candidates(&self, attr: Attr, value: &str) -> &[String] {
        self.by
            .get(&(attr, attr.normal(value)))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn user(id: &str, name: &str) -> Value {
        json!({"id": id, "userName": name, "externalId": format!("ext-{id}")})
    }

    #[test]
    fn a_provider_that_ignores_the_filter_is_caught() {
        let page = vec![user("1", "anna"), user("2", "annabel")];
        assert_eq!(pick(page, Attr::UserName, "ann"), Pick::FilterIgnored);
        // Even when the wanted one is on the page: others are there that the filter excludes.
        let page = vec![user("1", "ann"), user("2", "annabel")];
        assert_eq!(pick(page, Attr::UserName, "ann"), Pick::FilterIgnored);
    }

    #[test]
    fn user_names_compare_without_case_external_ids_and_group_names_exactly() {
        assert!(matches!(
            pick(vec![user("1", "Ann")], Attr::UserName, "ann"),
            Pick::Found(_)
        ));
        let g = json!({"id": "g", "displayName": "admins", "externalId": "K"});
        // Filtered with case folding by the provider: not ignored, but not the same group.
        assert_eq!(
            pick(vec![g.clone()], Attr::DisplayName, "Admins"),
            Pick::NotFound
        );
        assert_eq!(pick(vec![g.clone()], Attr::ExternalId, "k"), Pick::NotFound);
        assert!(matches!(
            pick(vec![g], Attr::ExternalId, "K"),
            Pick::Found(_)
        ));
        assert_eq!(
            pick(
                vec![user("1", "ann"), user("2", "ANN")],
                Attr::UserName,
                "Ann"
            ),
            Pick::Ambiguous(2)
        );
        assert_eq!(pick(vec![], Attr::UserName, "ann"), Pick::NotFound);
        // KELVIN SIGN lower-cases to k in Unicode: a look-alike, not the same name.
        assert_eq!(
            pick(vec![user("1", "\u{212a}ate")], Attr::UserName, "kate"),
            Pick::NotFound
        );
    }

    #[test]
    fn the_index_finds_by_each_attribute() {
        let docs = vec![
            user("1", "Ann"),
            user("2", "bob"),
            json!({"userName": "no-id"}),
        ];
        let ix = Index::new(&docs, &[Attr::UserName, Attr::ExternalId]);
        assert_eq!(ix.candidates(Attr::UserName, "ann"), ["1".to_string()]);
        assert_eq!(ix.candidates(Attr::ExternalId, "ext-2"), ["2".to_string()]);
        assert!(ix.candidates(Attr::ExternalId, "EXT-2").is_empty());
        assert!(ix.candidates(Attr::UserName, "no-id").is_empty());
    }

    proptest! {
        /// Whatever a provider answers, a resource is only ever picked if it holds the value.
        #[test]
        fn only_a_true_match_is_ever_picked(
            names in proptest::collection::vec("[aAbB]{1,3}", 0..6),
            wanted in "[aAbB]{1,3}",
        ) {
            let items: Vec<Value> = names.iter().enumerate().map(|(i, n)| user(&i.to_string(), n)).collect();
            if let Pick::Found(doc) = pick(items.clone(), Attr::UserName, &wanted) {
                prop_assert!(Attr::UserName.matches(&doc, &wanted));
                let others = items.iter().filter(|d| Attr::UserName.matches(d, &wanted)).count();
                prop_assert_eq!(others, 1);
            }
            let ix = Index::new(&items, &[Attr::UserName]);
            for id in ix.candidates(Attr::UserName, &wanted) {
                let doc = items.iter().find(|d| d["id"] == id.as_str()).unwrap();
                prop_assert!(Attr::UserName.matches(doc, &wanted));
            }
        }
    }
}
