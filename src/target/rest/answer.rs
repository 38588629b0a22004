//! Reading a REST target's answers: which are successes (the status, and a success field for APIs
//! that answer 200 with `{"status": "ERROR"}`), what an error says (already exists, not found,
//! or its message), and how a listed object becomes a canonical user or group.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::Value;

use super::template::lookup;
use crate::config::rest::{FieldPaths, ResponseRules};
use crate::model::User;
use crate::target::http::{body_text, clean_detail, ErrorShape};
use crate::target::{RemoteGroup, RemoteUser, TargetErrorKind};

/// How one event's answers are judged.
pub(super) struct Judge<'a> {
    pub rules: &'a ResponseRules,
    pub expect: &'a [u16],
}

impl Judge<'_> {
    fn message(&self, doc: Option<&Value>) -> Option<String> {
        let doc = doc?;
        let configured = self.rules.message_path.as_deref();
        let found = configured.and_then(|p| lookup(doc, p)).or_else(|| {
            ["message", "error_description", "detail", "error"]
                .iter()
                .find_map(|k| doc.get(*k).filter(|v| v.is_string()).cloned())
        })?;
        match found {
            Value::String(s) => Some(clean_detail(&s)),
            Value::Null => None,
            other => Some(clean_detail(&other.to_string())),
        }
    }

    fn says(&self, message: Option<&str>, text: Option<&String>) -> bool {
        match (message, text) {
            (Some(m), Some(t)) => m.to_lowercase().contains(t.as_str()),
            _ => false,
        }
    }

    /// An error in the target's words: exists, missing, or a plain refusal.
    fn classify(
        &self,
        status: u16,
        code: Option<String>,
        detail: Option<String>,
    ) -> TargetErrorKind {
        if self.rules.exists_statuses.contains(&status)
            || self.says(detail.as_deref(), self.rules.exists_message.as_ref())
        {
            return TargetErrorKind::Exists { status, detail };
        }
        if status == 404 || self.says(detail.as_deref(), self.rules.not_found_message.as_ref()) {
            return TargetErrorKind::Missing { status, detail };
        }
        TargetErrorKind::Http {
            status,
            code,
            detail,
        }
    }
}

impl ErrorShape for Judge<'_> {
    fn is_success(&self, status: StatusCode) -> bool {
        if self.expect.is_empty() {
            status.is_success()
        } else {
            self.expect.contains(&status.as_u16())
        }
    }

    fn http_error(&self, status: StatusCode, body: &[u8]) -> TargetErrorKind {
        let doc: Option<Value> = serde_json::from_slice(body).ok();
        let detail = self.message(doc.as_ref()).or_else(|| body_text(body));
        let code = doc.as_ref().and_then(|d| {
            self.rules
                .success_path
                .as_deref()
                .and_then(|p| lookup(d, p))
                .or_else(|| d.get("code").cloned())
                .map(|v| text_of(&v))
        });
        self.classify(status.as_u16(), code, detail)
    }

    fn body_error(&self, status: StatusCode, doc: &Value) -> Option<TargetErrorKind> {
        let path = self.rules.success_path.as_deref()?;
        let want = self.rules.success_value.as_ref()?;
        let got = lookup(doc, path).unwrap_or(Value::Null);
        if &got == want {
            return None;
        }
        let detail = self.message(Some(doc));
        if self.rules.not_found_values.contains(&got) {
            return Some(TargetErrorKind::Missing {
                status: status.as_u16(),
                detail,
            });
        }
        let code = (!got.is_null()).then(|| text_of(&got));
        Some(self.classify(status.as_u16(), code, detail))
    }
}

/// A scalar as text (ids may be numbers).
pub(super) fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// [`scalar`], as a user's field holds it.
fn text(item: &Value, paths: &FieldPaths, field: &str) -> Option<crate::model::Text> {
    scalar(item, paths, field).map(Into::into)
}

fn scalar(item: &Value, paths: &FieldPaths, field: &str) -> Option<String> {
    let p = paths.paths.get(field)?;
    let v = match lookup(item, p)? {
        // A path through a list (`emails.*.value`) that finds one value: that value.
        Value::Array(mut a) if a.len() == 1 => a.pop()?,
        v => v,
    };
    match v {
        Value::Null => None,
        Value::String(s) => Some(s),
        v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
        _ => None,
    }
}

/// A listed or looked-up user, read back through the field paths; `None` without an id or a
/// userName (it cannot be matched, so it is never adopted).
pub(super) fn user(item: &Value, paths: &FieldPaths, custom: &[String]) -> Option<RemoteUser> {
    let id = scalar(item, paths, "id").filter(|s| !s.is_empty())?;
    let user_name = scalar(item, paths, "userName").filter(|s| !s.is_empty())?;
    let active = match paths.paths.get("active").and_then(|p| lookup(item, p)) {
        Some(Value::Bool(b)) => b,
        Some(Value::String(s)) => !matches!(
            s.to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "inactive" | "disabled"
        ),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        // Not read back: taken as active (an API that cannot show it cannot show drift in it).
        _ => true,
    };
    let mut extra = BTreeMap::new();
    for c in custom {
        if let Some(v) = scalar(item, paths, c) {
            extra.insert(c.clone(), v);
        }
    }
    Some(RemoteUser {
        id,
        external_id: scalar(item, paths, "externalId"),
        user: User {
            user_name: user_name.into(),
            given_name: text(item, paths, "givenName"),
            family_name: text(item, paths, "familyName"),
            display_name: text(item, paths, "displayName"),
            email: text(item, paths, "email"),
            active,
            title: text(item, paths, "title"),
            department: text(item, paths, "department"),
            employee_number: text(item, paths, "employeeNumber"),
            manager: text(item, paths, "manager"),
            custom: extra.into(),
        },
    })
}

/// A listed or looked-up group; `None` without an id or a name.
pub(super) fn group(item: &Value, paths: &FieldPaths) -> Option<RemoteGroup> {
    let id = scalar(item, paths, "id").filter(|s| !s.is_empty())?;
    let display_name = scalar(item, paths, "displayName")?;
    let member_ids = paths
        .paths
        .get("members")
        .and_then(|p| lookup(item, p))
        .and_then(|v| match v {
            Value::Array(a) => Some(
                a.iter()
                    .filter(|m| m.is_string() || m.is_number())
                    .map(text_of)
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default();
    Some(RemoteGroup {
        id,
        external_id: scalar(item, paths, "externalId"),
        display_name,
        member_ids,
    })
}

/// The objects an answer holds: at the `data` path, else the answer itself (an array, or the
/// one object it is). `Err` when the data path does not hold an array or object.
pub(super) fn items(doc: &Value, data: Option<&str>) -> Result<Vec<Value>, String> {
    let at = match data {
        Some(p) => match lookup(doc, p) {
            Some(v) => v,
            None => {
                return Err(format!(
                    "the answer has nothing at `{p}` (the event's data)"
                ))
            }
        },
        None => doc.clone(),
    };
    match at {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(Vec::new()),
        o @ Value::Object(_) => Ok(vec![o]),
        other => Err(format!(
            "expected a list of objects{}, found {}",
            data.map(|d| format!(" at `{d}`")).unwrap_or_default(),
            match other {
                Value::String(_) => "text",
                Value::Number(_) => "a number",
                _ => "a boolean",
            }
        )),
    }
}
