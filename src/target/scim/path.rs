//! SCIM attribute paths a mapping may target (RFC 7644 §3.5.2's `attrPath` / `valuePath`, the
//! forms an administrator needs): `nickName`, `name.middleName`, `urn:...:User:costCenter`,
//! `phoneNumbers[type eq "mobile"].value`, `addresses[type eq "work"].locality`. Read from and
//! written into resources here, so creation, PATCH, GET + PUT and resync agree on them.

use std::fmt;

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScimPath {
    /// The extension schema URN, for an extension attribute.
    pub schema: Option<String>,
    pub attr: String,
    /// `[type eq "work"]`: the element of a multi-valued attribute, by (attribute, value).
    pub filter: Option<(String, String)>,
    pub sub: Option<String>,
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
}

impl ScimPath {
    pub(crate) fn parse(path: &str) -> Result<ScimPath, String> {
        let shown: String = path.escape_debug().collect();
        let bad = |why: &str| format!("`{shown}` is not a SCIM attribute path: {why}");
        let head_end = path.find('[').unwrap_or(path.len());
        let (schema, rest) = if path
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
        {
            let (schema, attr_start) = path[..head_end]
                .rsplit_once(':')
                .map(|(s, _)| (s, s.len() + 1))
                .ok_or_else(|| bad("an extension path is urn:...:Schema:attribute"))?;
            if schema.len() <= 4 {
                return Err(bad("an extension path is urn:...:Schema:attribute"));
            }
            (Some(schema.to_string()), &path[attr_start..])
        } else {
            (None, path)
        };
        let attr_end = rest.find(['[', '.']).unwrap_or(rest.len());
        let attr = &rest[..attr_end];
        if !is_name(attr) {
            return Err(bad(&format!(
                "`{}` is not an attribute name",
                attr.escape_debug()
            )));
        }
        let mut tail = &rest[attr_end..];
        let mut filter = None;
        if let Some(f) = tail.strip_prefix('[') {
            let close = f.rfind(']').ok_or_else(|| bad("`[` without `]`"))?;
            let inner = f[..close].trim();
            let mut words = inner.splitn(3, char::is_whitespace);
            let (fattr, op, lit) = (
                words.next().unwrap_or_default(),
                words.next().unwrap_or_default(),
                words.next().unwrap_or_default().trim(),
            );
            if !is_name(fattr) || !op.eq_ignore_ascii_case("eq") {
                return Err(bad("a value filter is [attribute eq \"value\"]"));
            }
            let value: String = serde_json::from_str(lit)
                .map_err(|_| bad("the filter value must be a quoted text"))?;
            filter = Some((fattr.to_string(), value));
            tail = &f[close + 1..];
        }
        let sub = match tail {
            "" => None,
            t => match t.strip_prefix('.') {
                Some(s) if is_name(s) => Some(s.to_string()),
                _ => return Err(bad(&format!("unexpected `{}`", t.escape_debug()))),
            },
        };
        if filter.is_some() && sub.is_none() {
            return Err(bad(
                "name the sub-attribute of the filtered element, e.g. phoneNumbers[type eq \"mobile\"].value",
            ));
        }
        Ok(ScimPath {
            schema,
            attr: attr.to_string(),
            filter,
            sub,
        })
    }

    /// The path of the whole element, for a filtered path (`phoneNumbers[type eq "mobile"]`).
    pub(crate) fn element(&self) -> String {
        let mut p = ScimPath {
            sub: None,
            ..self.clone()
        }
        .to_string();
        if self.filter.is_none() {
            p = self.to_string();
        }
        p
    }

    /// The attribute holding it, with its schema (`phoneNumbers`, `urn:...:User:site`).
    pub(crate) fn attribute(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}:{}", self.attr),
            None => self.attr.clone(),
        }
    }

    fn matches(&self, element: &Value) -> bool {
        match &self.filter {
            Some((a, v)) => element
                .get(a)
                .and_then(Value::as_str)
                .is_some_and(|x| x.eq_ignore_ascii_case(v)),
            None => true,
        }
    }

    fn container<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        match &self.schema {
            Some(s) => doc.get(s.as_str()),
            None => Some(doc),
        }
    }

    /// The value at this path in a resource, as text.
    pub(crate) fn get(&self, doc: &Value) -> Option<String> {
        let v = self.container(doc)?.get(&self.attr)?;
        let v = if self.filter.is_some() {
            v.as_array()?.iter().find(|e| self.matches(e))?
        } else {
            v
        };
        let v = match &self.sub {
            Some(s) => v.get(s)?,
            None => v,
        };
        match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// True when the resource holds a (non-empty) value at this path.
    pub(crate) fn present(&self, doc: &Value) -> bool {
        let Some(v) = self.container(doc).and_then(|c| c.get(&self.attr)) else {
            return false;
        };
        let v = if self.filter.is_some() {
            match v
                .as_array()
                .and_then(|a| a.iter().find(|e| self.matches(e)))
            {
                Some(e) => e,
                None => return false,
            }
        } else {
            v
        };
        let v = match &self.sub {
            Some(s) => match v.get(s) {
                Some(x) => x,
                None => return false,
            },
            None => v,
        };
        match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        }
    }

    /// Sets the value at this path, making what is missing (the extension object and its
    /// `schemas` entry, the element of a multi-valued attribute).
    pub(crate) fn set(&self, root: &mut Map<String, Value>, value: &str) {
        let container = match &self.schema {
            Some(s) => {
                let schemas = root
                    .entry("schemas")
                    .or_insert_with(|| Value::Array(vec![]));
                if let Value::Array(list) = schemas {
                    if !list.iter().any(|x| x == s.as_str()) {
                        list.push(Value::String(s.clone()));
                    }
                }
                let slot = root
                    .entry(s.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                match slot.as_object_mut() {
                    Some(m) => m,
                    None => return,
                }
            }
            None => root,
        };
        let text = Value::String(value.to_string());
        let target = if let Some((fa, fv)) = &self.filter {
            let list = container
                .entry(self.attr.clone())
                .or_insert_with(|| Value::Array(vec![]));
            if !list.is_array() {
                *list = Value::Array(vec![]);
            }
            let Some(items) = list.as_array_mut() else {
                return;
            };
            let at = match items.iter().position(|e| self.matches(e)) {
                Some(i) => i,
                None => {
                    let mut e = Map::new();
                    e.insert(fa.clone(), Value::String(fv.clone()));
                    items.push(Value::Object(e));
                    items.len() - 1
                }
            };
            &mut items[at]
        } else if self.sub.is_some() {
            let slot = container
                .entry(self.attr.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            slot
        } else {
            container.insert(self.attr.clone(), text);
            return;
        };
        if let (Some(sub), Some(obj)) = (&self.sub, target.as_object_mut()) {
            obj.insert(sub.clone(), text);
        }
    }

    /// Removes the value at this path; an element left with nothing but its filter attribute
    /// goes with it.
    pub(crate) fn remove(&self, root: &mut Map<String, Value>) {
        let container = match &self.schema {
            Some(s) => match root.get_mut(s.as_str()).and_then(Value::as_object_mut) {
                Some(m) => m,
                None => return,
            },
            None => root,
        };
        match (&self.filter, &self.sub) {
            (Some((fa, _)), sub) => {
                let Some(items) = container.get_mut(&self.attr).and_then(Value::as_array_mut)
                else {
                    return;
                };
                for e in items.iter_mut().filter(|e| self.matches(e)) {
                    if let (Some(s), Some(o)) = (sub, e.as_object_mut()) {
                        o.remove(s);
                    }
                }
                items.retain(|e| {
                    !(self.matches(e)
                        && (sub.is_none()
                            || e.as_object().is_some_and(|o| o.keys().all(|k| k == fa))))
                });
                if items.is_empty() {
                    container.remove(&self.attr);
                }
            }
            (None, Some(sub)) => {
                if let Some(o) = container.get_mut(&self.attr).and_then(Value::as_object_mut) {
                    o.remove(sub);
                }
            }
            (None, None) => {
                container.remove(&self.attr);
            }
        }
    }
}

impl fmt::Display for ScimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = &self.schema {
            write!(f, "{s}:")?;
        }
        write!(f, "{}", self.attr)?;
        if let Some((a, v)) = &self.filter {
            write!(f, "[{a} eq {}]", super::filter_literal(v))?;
        }
        if let Some(s) = &self.sub {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const ACME: &str = "urn:example:params:scim:schemas:extension:acme:2.0:User";

    #[test]
    fn the_forms_an_administrator_writes_are_understood() {
        let p = ScimPath::parse("phoneNumbers[type eq \"mobile\"].value").unwrap();
        assert_eq!(p.attr, "phoneNumbers");
        assert_eq!(p.filter, Some(("type".into(), "mobile".into())));
        assert_eq!(p.sub.as_deref(), Some("value"));
        assert_eq!(p.element(), "phoneNumbers[type eq \"mobile\"]");
        let p = ScimPath::parse(&format!("{ACME}:costCenter")).unwrap();
        assert_eq!(p.schema.as_deref(), Some(ACME));
        assert_eq!(p.attr, "costCenter");
        let p = ScimPath::parse("name.middleName").unwrap();
        assert_eq!(
            (p.attr.as_str(), p.sub.as_deref()),
            ("name", Some("middleName"))
        );
        for bad in [
            "",
            "1abc",
            "phoneNumbers[type eq mobile].value",
            "phoneNumbers[type co \"m\"].value",
            "phoneNumbers[type eq \"mobile\"]",
            "a.b.c",
            "urn:x",
            "name.",
        ] {
            assert!(ScimPath::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn values_are_set_read_and_removed_where_the_path_says() {
        let mut doc = Map::new();
        let mobile = ScimPath::parse("phoneNumbers[type eq \"mobile\"].value").unwrap();
        let work_city = ScimPath::parse("addresses[type eq \"work\"].locality").unwrap();
        let work_zip = ScimPath::parse("addresses[type eq \"work\"].postalCode").unwrap();
        let middle = ScimPath::parse("name.middleName").unwrap();
        let site = ScimPath::parse(&format!("{ACME}:site")).unwrap();
        mobile.set(&mut doc, "+1 555");
        work_city.set(&mut doc, "Paris");
        work_zip.set(&mut doc, "75001");
        middle.set(&mut doc, "Q");
        site.set(&mut doc, "HQ");
        doc.insert(
            "phoneNumbers".into(),
            json!([{"type": "home", "value": "1"}, {"type": "mobile", "value": "+1 555"}]),
        );
        let v = Value::Object(doc.clone());
        assert_eq!(mobile.get(&v).as_deref(), Some("+1 555"));
        assert_eq!(
            v["addresses"],
            json!([{"type": "work", "locality": "Paris", "postalCode": "75001"}])
        );
        assert_eq!(middle.get(&v).as_deref(), Some("Q"));
        assert_eq!(site.get(&v).as_deref(), Some("HQ"));
        assert_eq!(v["schemas"], json!([ACME]));
        work_city.remove(&mut doc);
        assert_eq!(
            Value::Object(doc.clone())["addresses"],
            json!([{"type": "work", "postalCode": "75001"}])
        );
        work_zip.remove(&mut doc);
        assert!(!doc.contains_key("addresses"));
        mobile.remove(&mut doc);
        assert_eq!(
            Value::Object(doc)["phoneNumbers"],
            json!([{"type": "home", "value": "1"}])
        );
    }

    proptest! {
        #[test]
        fn a_path_reads_back_what_it_wrote_and_prints_as_it_parses(
            attr in "[a-zA-Z][a-zA-Z0-9]{0,8}",
            kind in "[ -~]{1,10}",
            value in "[ -~]{1,20}",
        ) {
            let text = format!("{attr}[type eq {}].value", serde_json::Value::String(kind.clone()));
            let p = ScimPath::parse(&text).unwrap();
            prop_assert_eq!(p.to_string(), text);
            let mut doc = Map::new();
            p.set(&mut doc, &value);
            prop_assert_eq!(p.get(&Value::Object(doc)), Some(value));
        }
    }
}
