//! `[target.events.*]`, `[target.response]` and `[target.fields.*]` of a REST target, checked:
//! every template is read now, so a placeholder the event cannot fill is an error naming the
//! event, not a request that goes out wrong.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::*;
use crate::config::rest::{
    BodyFormat, Event, EventConfig, FieldPaths, Missing, ResponseRules, RestConfig,
};
use crate::target::rest::template;

/// The events miniOrange's admin API is driven with (`kind = "miniorange"`).
const MINIORANGE: &str = include_str!("miniorange.toml");

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvent {
    method: Option<String>,
    path: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<toml::Value>,
    /// The body written as JSON text, for APIs whose bodies read better so.
    body_json: Option<String>,
    format: Option<BodyFormat>,
    expect: Option<Vec<u16>>,
    id: Option<String>,
    id_from: Option<String>,
    data: Option<String>,
    next: Option<String>,
    start_page: Option<i64>,
    /// `false` switches off an event of a preset.
    enabled: Option<bool>,
}

impl RawEvent {
    /// `self` over `base`: each key set here wins.
    fn over(self, base: RawEvent) -> RawEvent {
        let mut headers = base.headers;
        headers.extend(self.headers);
        let body_set = self.body.is_some() || self.body_json.is_some();
        RawEvent {
            method: self.method.or(base.method),
            path: self.path.or(base.path),
            headers,
            body: if body_set { self.body } else { base.body },
            body_json: if body_set {
                self.body_json
            } else {
                base.body_json
            },
            format: self.format.or(base.format),
            expect: self.expect.or(base.expect),
            id: self.id.or(base.id),
            id_from: self.id_from.or(base.id_from),
            data: self.data.or(base.data),
            next: self.next.or(base.next),
            start_page: self.start_page.or(base.start_page),
            enabled: self.enabled.or(base.enabled),
        }
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResponse {
    success_path: Option<String>,
    success_value: Option<toml::Value>,
    message_path: Option<String>,
    exists_statuses: Option<Vec<u16>>,
    exists_message: Option<String>,
    not_found_message: Option<String>,
    not_found_values: Option<Vec<toml::Value>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFields {
    #[serde(default)]
    user: BTreeMap<String, String>,
    #[serde(default)]
    group: BTreeMap<String, String>,
}

/// The preset of `kind = "miniorange"`, as the file format writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Preset {
    events: BTreeMap<String, RawEvent>,
    response: RawResponse,
    fields: RawFields,
}

/// Canonical user fields a listed user is read back into.
const USER_FIELDS: &[&str] = &[
    "id",
    "externalId",
    "userName",
    "givenName",
    "familyName",
    "displayName",
    "email",
    "active",
    "title",
    "department",
    "employeeNumber",
    "manager",
];
const GROUP_FIELDS: &[&str] = &["id", "externalId", "displayName", "members"];

pub(super) struct RawRest {
    pub kind: TargetKind,
    pub events: BTreeMap<String, RawEvent>,
    pub response: Option<RawResponse>,
    pub fields: Option<RawFields>,
    pub missing: Option<Missing>,
}

impl RawRest {
    /// `custom`: custom attributes templates may name; `customer_key`: bodies may name
    /// `{customerKey}` (miniOrange's authorization).
    pub(super) fn check(
        self,
        cx: &Cx,
        custom: &[String],
        customer_key: bool,
    ) -> Result<RestConfig, ConfigError> {
        let invalid = |key: &str, reason: String| cx.invalid(key, reason);
        let (mut events, mut response, mut fields) = (
            BTreeMap::new(),
            RawResponse::default(),
            RawFields::default(),
        );
        if self.kind == TargetKind::MiniOrange {
            let p: Preset = toml::from_str(MINIORANGE)
                .map_err(|e| invalid("target.kind", format!("the miniorange preset: {e}")))?;
            events = p.events;
            response = p.response;
            fields = p.fields;
        }
        for (name, ev) in self.events {
            let base = events.remove(&name).unwrap_or_default();
            events.insert(name, ev.over(base));
        }
        if let Some(r) = self.response {
            response = RawResponse {
                success_path: r.success_path.or(response.success_path),
                success_value: r.success_value.or(response.success_value),
                message_path: r.message_path.or(response.message_path),
                exists_statuses: r.exists_statuses.or(response.exists_statuses),
                exists_message: r.exists_message.or(response.exists_message),
                not_found_message: r.not_found_message.or(response.not_found_message),
                not_found_values: r.not_found_values.or(response.not_found_values),
            };
        }
        if let Some(f) = self.fields {
            fields.user.extend(f.user);
            fields.group.extend(f.group);
        }

        let mut checked = BTreeMap::new();
        for (name, raw) in events {
            let key = format!("target.events.{name}");
            let event = Event::from_name(&name).ok_or_else(|| {
                invalid(
                    &key,
                    format!(
                        "not an event; the events are {}",
                        Event::ALL.map(Event::name).join(", ")
                    ),
                )
            })?;
            if raw.enabled == Some(false) {
                continue;
            }
            checked.insert(
                event,
                check_event(cx, event, &key, raw, custom, customer_key)?,
            );
        }
        let events = checked;
        for needed in [Event::CreateUser, Event::UpdateUser] {
            if !events.contains_key(&needed) {
                return Err(invalid(
                    &format!("target.events.{}", needed.name()),
                    "required: a REST target must at least create and update users".into(),
                ));
            }
        }
        check_groups(cx, &events)?;
        // A create is preceded by a look-up, so that a user (or group) already there, or made
        // by a create whose answer was lost, is adopted rather than made twice.
        for (create, find, list) in [
            (Event::CreateUser, Event::FindUser, Event::ListUsers),
            (Event::CreateGroup, Event::FindGroup, Event::ListGroups),
        ] {
            if events.contains_key(&create)
                && !events.contains_key(&find)
                && !events.contains_key(&list)
            {
                return Err(invalid(
                    &format!("target.events.{}", find.name()),
                    format!(
                        "{} needs a way to look first: configure {} (a look-up by name) or {} \
                         (a listing matched locally); without one, what is already on the target \
                         would be created twice",
                        create.name(),
                        find.name(),
                        list.name()
                    ),
                ));
            }
        }
        let update_names_active = events
            .get(&Event::UpdateUser)
            .and_then(|e| e.body.as_ref())
            .and_then(|b| template::body_names(b).ok())
            .is_some_and(|n| n.iter().any(|n| n == "active"));
        if !update_names_active && !events.contains_key(&Event::ActivateUser) {
            return Err(invalid(
                "target.events.activate_user",
                "a user enabled again could not be reactivated: name {active} in the \
                 update_user body, or configure an activate_user event"
                    .into(),
            ));
        }

        let success_value = response.success_value.map(json_of);
        if response.success_path.is_some() != success_value.is_some() {
            return Err(invalid(
                "target.response",
                "set success_path and success_value together".into(),
            ));
        }
        let rules = ResponseRules {
            success_path: response.success_path,
            success_value,
            message_path: response.message_path,
            exists_statuses: response.exists_statuses.unwrap_or_else(|| vec![409]),
            exists_message: response.exists_message.map(|m| m.to_lowercase()),
            not_found_message: response.not_found_message.map(|m| m.to_lowercase()),
            not_found_values: response
                .not_found_values
                .unwrap_or_default()
                .into_iter()
                .map(json_of)
                .collect(),
        };

        let user_fields = read_back(cx, "user", &events, &fields.user, USER_FIELDS, custom)?;
        let group_fields = read_back(cx, "group", &events, &fields.group, GROUP_FIELDS, &[])?;
        Ok(RestConfig {
            events,
            response: rules,
            user_fields,
            group_fields,
            missing: self.missing.unwrap_or(Missing::Omit),
            custom: custom.to_vec(),
            customer_key: None,
        })
    }
}

fn json_of(v: toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn check_event(
    cx: &Cx,
    event: Event,
    key: &str,
    raw: RawEvent,
    custom: &[String],
    customer_key: bool,
) -> Result<EventConfig, ConfigError> {
    let invalid = |k: &str, reason: String| cx.invalid(&format!("{key}{k}"), reason);
    let method_text = raw.method.unwrap_or_else(|| "".into());
    let method = reqwest::Method::from_bytes(method_text.to_ascii_uppercase().as_bytes())
        .ok()
        .filter(|m| {
            [
                reqwest::Method::GET,
                reqwest::Method::POST,
                reqwest::Method::PUT,
                reqwest::Method::PATCH,
                reqwest::Method::DELETE,
            ]
            .contains(m)
        })
        .ok_or_else(|| {
            invalid(
                ".method",
                format!("`{method_text}`: one of GET, POST, PUT, PATCH, DELETE"),
            )
        })?;
    let path = raw
        .path
        .ok_or_else(|| invalid(".path", "required (relative to target.url)".into()))?;
    if path.contains('#') {
        return Err(invalid(
            ".path",
            format!("`{path}`: a fragment (`#`) is never sent to a server"),
        ));
    }
    if path
        .split('?')
        .next()
        .unwrap_or("")
        .split('/')
        .map(|seg| {
            percent_encoding::percent_decode_str(seg)
                .decode_utf8_lossy()
                .into_owned()
        })
        .any(|seg| seg == "." || seg == "..")
    {
        return Err(invalid(
            ".path",
            format!("`{path}`: `.` and `..` segments are not allowed"),
        ));
    }
    if !(path.is_empty() || path.starts_with('/') || path.starts_with('?')) {
        return Err(invalid(
            ".path",
            format!("`{path}` must start with `/` (it is relative to target.url)"),
        ));
    }
    let allowed = |names: Vec<String>, k: &str| -> Result<(), ConfigError> {
        for n in names {
            let known = event.placeholders().contains(&n.as_str())
                || (event.names_user_fields() && custom.contains(&n))
                || (customer_key && n == "customerKey");
            if !known {
                let mut can: Vec<String> =
                    event.placeholders().iter().map(|s| s.to_string()).collect();
                if event.names_user_fields() {
                    can.extend(custom.iter().cloned());
                }
                return Err(invalid(
                    k,
                    format!(
                        "`{{{n}}}` is not a value this event knows; it knows {}",
                        can.iter()
                            .map(|c| format!("{{{c}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        Ok(())
    };
    allowed(
        template::names(&path).map_err(|e| invalid(".path", e))?,
        ".path",
    )?;
    let mut headers = Vec::new();
    for (name, value) in raw.headers {
        let hk = format!(".headers.{name}");
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid(&hk, format!("`{name}` is not an HTTP header name")));
        }
        allowed(template::names(&value).map_err(|e| invalid(&hk, e))?, &hk)?;
        if value.chars().any(char::is_control) {
            return Err(invalid(
                &hk,
                "a header value cannot hold a control character (a line break?)".into(),
            ));
        }
        headers.push((name, value));
    }
    let body = match (raw.body, raw.body_json) {
        (Some(_), Some(_)) => {
            return Err(invalid(".body", "set body or body_json, not both".into()));
        }
        (Some(t), None) => Some(json_of(t)),
        (None, Some(j)) => Some(
            serde_json::from_str::<Value>(&j)
                .map_err(|e| invalid(".body_json", format!("not JSON: {e}")))?,
        ),
        (None, None) => None,
    };
    let format = raw.format.unwrap_or(BodyFormat::Json);
    if let Some(b) = &body {
        allowed(
            template::body_names(b).map_err(|e| invalid(".body", e))?,
            ".body",
        )?;
        if format == BodyFormat::Form {
            let flat = b.as_object().is_some_and(|o| {
                o.values().all(|v| match v {
                    Value::Object(_) => false,
                    Value::Array(a) => a.iter().all(|i| !i.is_object() && !i.is_array()),
                    _ => true,
                })
            });
            if !flat {
                return Err(invalid(
                    ".body",
                    "a form body is one table of keys whose values are text or lists of text"
                        .into(),
                ));
            }
        }
        if method == reqwest::Method::GET {
            return Err(invalid(".body", "a GET request carries no body".into()));
        }
    }
    let creates = matches!(event, Event::CreateUser | Event::CreateGroup);
    if creates && raw.id.is_none() && raw.id_from.is_none() {
        return Err(invalid(
            ".id",
            "required: where the answer holds the new object's id (e.g. id = \"id\"), or \
             id_from = a value sent that identifies it (e.g. id_from = \"userName\")"
                .into(),
        ));
    }
    if raw.id.is_some() && raw.id_from.is_some() {
        return Err(invalid(".id_from", "set id or id_from, not both".into()));
    }
    if let Some(f) = &raw.id_from {
        if !creates || !event.placeholders().contains(&f.as_str()) {
            return Err(invalid(
                ".id_from",
                format!("`{f}` is not a value this event sends"),
            ));
        }
    }
    let lists = matches!(event, Event::ListUsers | Event::ListGroups);
    if lists && raw.start_page.is_none() && raw.next.is_none() {
        let mut all = template::names(&path).unwrap_or_default();
        for (_, v) in &headers {
            all.extend(template::names(v).unwrap_or_default());
        }
        if let Some(b) = &body {
            all.extend(template::body_names(b).unwrap_or_default());
        }
        if all.iter().any(|n| n == "page") {
            return Err(invalid(
                ".start_page",
                "{page} is named, so set start_page (pages by number) or next (where the answer \
                 names the next page)"
                    .into(),
            ));
        }
    }
    if !lists && (raw.next.is_some() || raw.start_page.is_some()) {
        return Err(invalid(
            ".next",
            "pagination (next, start_page) is for list_users and list_groups".into(),
        ));
    }
    // Member events must say which members.
    let mut named: Vec<String> = template::names(&path).unwrap_or_default();
    for (_, v) in &headers {
        named.extend(template::names(v).unwrap_or_default());
    }
    if let Some(b) = &body {
        named.extend(template::body_names(b).unwrap_or_default());
    }
    let names_any = |n: &[&str]| named.iter().any(|x| n.contains(&x.as_str()));
    match event {
        Event::AddMembers | Event::RemoveMembers if !names_any(&["member", "members"]) => {
            return Err(invalid(
                "",
                "names neither {member} (one request per member) nor {members} (one per batch)"
                    .into(),
            ));
        }
        Event::SetMembers if !names_any(&["members"]) => {
            return Err(invalid("", "must send the whole list as {members}".into()));
        }
        _ => {}
    }
    if let Some(codes) = &raw.expect {
        if codes.is_empty() || codes.iter().any(|c| !(100..=599).contains(c)) {
            return Err(invalid(".expect", "HTTP statuses, 100 to 599".into()));
        }
    }
    Ok(EventConfig {
        method,
        path,
        headers,
        body,
        format,
        expect: raw.expect.unwrap_or_default(),
        id: raw.id,
        id_from: raw.id_from,
        data: raw.data,
        next: raw.next,
        start_page: raw.start_page,
    })
}

/// Groups are pushed when `create_group` is configured; then what keeps them must be too.
fn check_groups(cx: &Cx, events: &BTreeMap<Event, EventConfig>) -> Result<(), ConfigError> {
    let has = |e: Event| events.contains_key(&e);
    let group_events = [
        Event::RenameGroup,
        Event::DeleteGroup,
        Event::AddMembers,
        Event::RemoveMembers,
        Event::SetMembers,
        Event::GetGroup,
    ];
    if !has(Event::CreateGroup) {
        if let Some(e) = group_events.iter().find(|e| has(**e)) {
            return Err(cx.invalid(
                &format!("target.events.{}", e.name()),
                "group events without create_group: groups are pushed only with create_group"
                    .into(),
            ));
        }
        return Ok(());
    }
    let by_delta = has(Event::AddMembers) && has(Event::RemoveMembers);
    let by_set = has(Event::SetMembers) && has(Event::GetGroup);
    if !by_delta && !by_set {
        return Err(cx.invalid(
            "target.events",
            "groups are pushed (create_group is set), so memberships need add_members and \
             remove_members, or set_members with get_group (to read the current members)"
                .into(),
        ));
    }
    for e in [Event::RenameGroup, Event::DeleteGroup] {
        if !has(e) {
            return Err(cx.invalid(
                &format!("target.events.{}", e.name()),
                "required when groups are pushed (create_group is set)".into(),
            ));
        }
    }
    Ok(())
}

/// Where a listed object holds each field: as configured, else where the create (or, for
/// members, set_members) body puts it; the id where the create's answer has it.
fn read_back(
    cx: &Cx,
    what: &str,
    events: &BTreeMap<Event, EventConfig>,
    configured: &BTreeMap<String, String>,
    known: &[&str],
    custom: &[String],
) -> Result<FieldPaths, ConfigError> {
    let (create, more) = if what == "user" {
        (Event::CreateUser, Event::UpdateUser)
    } else {
        (Event::CreateGroup, Event::SetMembers)
    };
    let mut paths = BTreeMap::new();
    for e in [create, more] {
        if let Some(b) = events.get(&e).and_then(|c| c.body.as_ref()) {
            for (name, at) in template::placements(b) {
                paths.entry(name).or_insert(at);
            }
        }
    }
    if let Some(c) = events.get(&create) {
        match (&c.id, &c.id_from) {
            (Some(p), _) => {
                paths.insert("id".into(), p.clone());
            }
            (None, Some(from)) => {
                if let Some(p) = paths.get(from).cloned() {
                    paths.insert("id".into(), p);
                }
            }
            _ => {}
        }
    }
    for (name, at) in configured {
        let ok = known.contains(&name.as_str()) || custom.iter().any(|c| c == name);
        if !ok {
            return Err(cx.invalid(
                &format!("target.fields.{what}.{name}"),
                format!("not a {what} field; the fields are {}", known.join(", ")),
            ));
        }
        paths.insert(name.clone(), at.clone());
    }
    // Fields that are not fields of this kind (a `page`, `member` slipped in from a body).
    paths.retain(|k, _| known.contains(&k.as_str()) || custom.iter().any(|c| c == k));
    Ok(FieldPaths { paths })
}
