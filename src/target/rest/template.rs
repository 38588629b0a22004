//! Request templates of a REST target. A template names values by `{name}` (the seed's
//! `@ExternalUserId` stands for `{id}`; `{{` and `}}` are literal braces). Values are never pasted
//! into text raw: a JSON body is built as a structure (a string that is exactly one placeholder
//! becomes the typed value), a form body is form-encoded, a URL gets each value percent-encoded,
//! and a header refuses control characters.

use std::collections::BTreeMap;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};

use crate::config::rest::Missing;

/// Everything but RFC 3986's unreserved characters is escaped in a value placed in a URL: a
/// `/`, `?`, `#` or `&` in a userName cannot change the path or the query.
const VALUE_IN_URL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The seed's name for the stored target id.
const SEED_ID: &str = "@ExternalUserId";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Text(String),
    Value(String),
}

/// A string template split into text and placeholders.
pub(crate) fn parse(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{{") {
            text.push('{');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("}}") {
            text.push('}');
            rest = r;
        } else if let Some(r) = rest.strip_prefix(SEED_ID) {
            flush(&mut text, &mut parts);
            parts.push(Part::Value("id".into()));
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("`{template}`: a `{{` without its `}}`"))?;
            let name = r[..end].trim();
            if name.is_empty() || name.contains('{') {
                return Err(format!(
                    "`{template}`: `{{{name}}}` is not a placeholder (write `{{{{` for a literal brace)"
                ));
            }
            flush(&mut text, &mut parts);
            parts.push(Part::Value(name.to_string()));
            rest = &r[end + 1..];
        } else if rest.starts_with('}') {
            return Err(format!(
                "`{template}`: a `}}` without its `{{` (write `}}}}` for a literal brace)"
            ));
        } else {
            let c = rest.chars().next().unwrap_or_default();
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    flush(&mut text, &mut parts);
    Ok(parts)
}

fn flush(text: &mut String, parts: &mut Vec<Part>) {
    if !text.is_empty() {
        parts.push(Part::Text(std::mem::take(text)));
    }
}

/// The values a string names (without their modifiers; an unknown modifier is an error).
pub(crate) fn names(template: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for p in parse(template)? {
        if let Part::Value(n) = p {
            let (base, modifier) = split_modifier(&n);
            if let Some(m) = modifier {
                if m != "json" {
                    return Err(format!(
                        "`{{{n}}}`: `|{m}` is not a modifier (`|json` writes the value as JSON text)"
                    ));
                }
            }
            out.push(base.to_string());
        }
    }
    Ok(out)
}

/// `userName|json` -> (`userName`, `json`).
fn split_modifier(name: &str) -> (&str, Option<&str>) {
    match name.split_once('|') {
        Some((b, m)) => (b.trim(), Some(m.trim())),
        None => (name, None),
    }
}

/// The value a placeholder stands for: `{x|json}` is the value written as JSON text (a string
/// with its quotes and escapes), for APIs that take JSON inside a query parameter.
fn resolve(vars: &Vars, name: &str) -> Option<Value> {
    let (base, modifier) = split_modifier(name);
    let v = vars.get(base)?;
    Some(match modifier {
        Some("json") => Value::String(v.to_string()),
        _ => v.clone(),
    })
}

/// Every placeholder a body names, with where (for messages).
pub(crate) fn body_names(body: &Value) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    walk_strings(body, &mut |s| {
        out.extend(names(s)?);
        Ok(())
    })?;
    Ok(out)
}

fn walk_strings(v: &Value, f: &mut dyn FnMut(&str) -> Result<(), String>) -> Result<(), String> {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().try_for_each(|x| walk_strings(x, f)),
        Value::Object(o) => o.iter().try_for_each(|(_, x)| walk_strings(x, f)),
        _ => Ok(()),
    }
}

/// The values one request's templates may name. A missing name is a value the object lacks.
#[derive(Debug, Default, Clone)]
pub(crate) struct Vars {
    values: BTreeMap<String, Value>,
}

impl Vars {
    pub(crate) fn set(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.values.insert(name.to_string(), value.into());
        self
    }

    pub(crate) fn set_opt(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.set(name, v);
        }
        self
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name).filter(|v| !v.is_null())
    }
}

/// A value as text inside a longer string: strings as they are, lists joined with commas.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(as_text).collect::<Vec<_>>().join(","),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A string with its placeholders replaced by text (missing values are empty).
pub(crate) fn interpolate(template: &str, vars: &Vars) -> Result<String, String> {
    let mut out = String::new();
    for p in parse(template)? {
        match p {
            Part::Text(t) => out.push_str(&t),
            Part::Value(n) => {
                out.push_str(&resolve(vars, &n).map(|v| as_text(&v)).unwrap_or_default())
            }
        }
    }
    Ok(out)
}

/// A header's value; `None` when the header is exactly one value the object lacks (the header
/// is left out, not sent empty). Control characters (CR, LF) are refused, never sent.
pub(crate) fn header_value(template: &str, vars: &Vars) -> Result<Option<String>, String> {
    if let [Part::Value(n)] = parse(template)?.as_slice() {
        if resolve(vars, n).is_none() {
            return Ok(None);
        }
    }
    let v = interpolate(template, vars)?;
    if v.chars().any(char::is_control) {
        return Err(format!(
            "a header built from `{template}` would hold a control character (a line break?)"
        ));
    }
    Ok(Some(v))
}

/// The path and query of a request, relative to the base URL: every value percent-encoded. A
/// value the URL needs but the object lacks is an error (a request to the wrong resource is
/// worse than none), and so is a value that would make a path segment `.` or `..`.
pub(crate) fn url_path(template: &str, vars: &Vars) -> Result<String, String> {
    let mut out = String::new();
    let mut segment_has_value = false;
    let mut in_query = false;
    let mut segment_start = 0;
    let check_segment = |out: &str, start: usize, has_value: bool| -> Result<(), String> {
        let seg = out[start..].to_ascii_lowercase();
        if has_value
            && matches!(
                seg.as_str(),
                "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
            )
        {
            return Err(format!(
                "`{template}`: a value would make the path segment `{seg}`"
            ));
        }
        Ok(())
    };
    for p in parse(template)? {
        match p {
            Part::Text(t) => {
                for c in t.chars() {
                    if !in_query && (c == '/' || c == '?') {
                        check_segment(&out, segment_start, segment_has_value)?;
                        segment_has_value = false;
                        segment_start = out.len() + 1;
                    }
                    if c == '?' {
                        in_query = true;
                    }
                    out.push(c);
                }
            }
            Part::Value(n) => {
                let v = resolve(vars, &n).ok_or_else(|| {
                    format!(
                        "the URL `{template}` needs `{{{n}}}`, which this object has no value for"
                    )
                })?;
                let text = as_text(&v);
                if text.is_empty() && !in_query {
                    return Err(format!(
                        "the URL `{template}` needs `{{{n}}}`, which is empty for this object"
                    ));
                }
                out.extend(utf8_percent_encode(&text, VALUE_IN_URL));
                segment_has_value |= !in_query;
            }
        }
    }
    if !in_query {
        check_segment(&out, segment_start, segment_has_value)?;
    }
    Ok(out)
}

/// A body template made a JSON value: a string that is exactly one placeholder becomes the
/// typed value (a boolean stays a boolean, a list a list); a missing one is left out or `null`
/// (`missing`); an array holding one template that names `{member}` is that template once per
/// member.
pub(crate) fn body(template: &Value, vars: &Vars, missing: Missing) -> Result<Value, String> {
    Ok(render(template, vars, missing)?.unwrap_or(Value::Null))
}

fn render(t: &Value, vars: &Vars, missing: Missing) -> Result<Option<Value>, String> {
    Ok(Some(match t {
        Value::String(s) => {
            let parts = parse(s)?;
            match parts.as_slice() {
                [Part::Value(n)] => match resolve(vars, n) {
                    Some(v) => v,
                    None => match missing {
                        Missing::Omit => return Ok(None),
                        Missing::Null => Value::Null,
                    },
                },
                _ => Value::String(interpolate(s, vars)?),
            }
        }
        Value::Array(items) => {
            if let [one] = items.as_slice() {
                if names_member(one)? {
                    let members = match vars.get("members") {
                        Some(Value::Array(m)) => m.clone(),
                        _ => Vec::new(),
                    };
                    let mut out = Vec::new();
                    for m in members {
                        let mut each = vars.clone();
                        each.set("member", m);
                        if let Some(v) = render(one, &each, missing)? {
                            out.push(v);
                        }
                    }
                    return Ok(Some(Value::Array(out)));
                }
            }
            let mut out = Vec::new();
            for i in items {
                if let Some(v) = render(i, vars, missing)? {
                    out.push(v);
                }
            }
            Value::Array(out)
        }
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, v) in o {
                if let Some(v) = render(v, vars, missing)? {
                    out.insert(k.clone(), v);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }))
}

/// True when a body names `{member}` outside a per-member list template: the request is about
/// one member, so it is sent once per member.
pub(crate) fn names_member_outside_lists(t: &Value) -> bool {
    match t {
        Value::String(s) => names(s).is_ok_and(|n| n.iter().any(|n| n == "member")),
        Value::Array(items) => {
            if let [one] = items.as_slice() {
                if names_member(one).unwrap_or(false) {
                    return false;
                }
            }
            items.iter().any(names_member_outside_lists)
        }
        Value::Object(o) => o.values().any(names_member_outside_lists),
        _ => false,
    }
}

fn names_member(t: &Value) -> Result<bool, String> {
    let mut found = false;
    walk_strings(t, &mut |s| {
        found |= names(s)?.iter().any(|n| n == "member");
        Ok(())
    })?;
    Ok(found)
}

/// A rendered body as `application/x-www-form-urlencoded`: each top-level key once per value
/// (a list repeats its key), `null` left out. Nested objects cannot be form-encoded (refused
/// when the config is read).
pub(crate) fn form(body: &Value) -> Result<String, String> {
    let Value::Object(o) = body else {
        return Err("a form body must be a table of keys".into());
    };
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in o {
        match v {
            Value::Null => {}
            Value::Array(items) => {
                for i in items {
                    ser.append_pair(k, &as_text(i));
                }
            }
            Value::Object(_) => return Err(format!("`{k}`: a form value cannot be a table")),
            other => {
                ser.append_pair(k, &as_text(other));
            }
        }
    }
    Ok(ser.finish())
}

/// The value at a dotted path (`users.data`, `name.given`, `items.0.id`); `*` maps over an
/// array (`members.*.value` is the list of every member's `value`).
pub(crate) fn lookup(doc: &Value, path: &str) -> Option<Value> {
    fn go(v: &Value, segs: &[&str]) -> Option<Value> {
        let Some((first, rest)) = segs.split_first() else {
            return Some(v.clone());
        };
        if *first == "*" {
            let items = v.as_array()?;
            return Some(Value::Array(
                items.iter().filter_map(|i| go(i, rest)).collect(),
            ));
        }
        let next = match v {
            Value::Object(o) => o.get(*first)?,
            Value::Array(a) => a.get(first.parse::<usize>().ok()?)?,
            _ => return None,
        };
        go(next, rest)
    }
    if path.is_empty() {
        return Some(doc.clone());
    }
    let segs: Vec<&str> = path.split('.').collect();
    go(doc, &segs)
}

/// Where a body template puts each placeholder that is a whole string (`name.given` for
/// `{ name = { given = "{givenName}" } }`): how a listed object is read back when no field
/// paths are configured. Lists of member templates give `members.*.value`.
pub(crate) fn placements(body: &Value) -> BTreeMap<String, String> {
    fn go(v: &Value, at: &str, out: &mut BTreeMap<String, String>) {
        let join = |k: &str| {
            if at.is_empty() {
                k.to_string()
            } else {
                format!("{at}.{k}")
            }
        };
        match v {
            Value::String(s) => {
                if let Ok(parts) = parse(s) {
                    if let [Part::Value(n)] = parts.as_slice() {
                        if split_modifier(n).1.is_some() {
                            return;
                        }
                        let name = if n == "member" { "members" } else { n };
                        out.entry(name.to_string())
                            .or_insert_with(|| at.to_string());
                    }
                }
            }
            Value::Object(o) => {
                for (k, x) in o {
                    go(x, &join(k), out);
                }
            }
            Value::Array(items) => {
                // A per-member list maps over the array; a literal one-element list (an
                // `emails = [{ value = "{email}" }]`) holds its value at index 0.
                if let [one] = items.as_slice() {
                    let at = if names_member(one).unwrap_or(false) {
                        "*"
                    } else {
                        "0"
                    };
                    go(one, &join(at), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    go(body, "", &mut out);
    out
}

#[cfg(test)]
mod tests;
