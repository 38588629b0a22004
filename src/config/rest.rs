//! The checked `[target.auth]`, `[target.events.*]`, `[target.response]` and `[target.fields.*]`
//! of a REST target: what each event sends and how its answer is read.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Secret;

/// How every request to the target is authorized.
#[derive(Debug, Clone)]
pub(crate) enum AuthConfig {
    /// No credentials (only with `type = "none"`, written out).
    None,
    Bearer {
        token: Secret,
    },
    Basic {
        user: String,
        password: Secret,
    },
    /// A custom header carrying a secret (`X-Api-Key: ...`).
    Header {
        name: String,
        value: Secret,
    },
    OAuth2(Box<OAuth2Config>),
    /// miniOrange's admin API: `Customer-Key`, `Timestamp` (Unix ms) and `Authorization` =
    /// lowercase hex SHA-512 of customer key + timestamp + API key, afresh for each request.
    MiniOrange {
        customer_key: String,
        api_key: Secret,
    },
}

/// OAuth 2.0 client credentials (RFC 6749 §4.4).
#[derive(Debug, Clone)]
pub(crate) struct OAuth2Config {
    pub token_url: url::Url,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: Option<String>,
    pub audience: Option<String>,
    /// Client credentials in an `Authorization: Basic` header (`basic`, RFC 6749's
    /// client_secret_basic) or in the form body (`post`).
    pub client_auth: ClientAuth,
    /// Where the answer holds the token, its lifetime (seconds) and its type.
    pub token_key: String,
    pub expiry_key: String,
    pub token_type_key: String,
    /// The scheme put before the token when the answer names none.
    pub token_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ClientAuth {
    Basic,
    Post,
}

/// One thing the gateway does on a REST target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Event {
    CreateUser,
    UpdateUser,
    ActivateUser,
    DeactivateUser,
    DeleteUser,
    FindUser,
    FindUserByKey,
    ListUsers,
    CreateGroup,
    RenameGroup,
    DeleteGroup,
    GetGroup,
    FindGroup,
    FindGroupByKey,
    ListGroups,
    AddMembers,
    RemoveMembers,
    SetMembers,
}

impl Event {
    pub(crate) const ALL: [Event; 18] = [
        Event::CreateUser,
        Event::UpdateUser,
        Event::ActivateUser,
        Event::DeactivateUser,
        Event::DeleteUser,
        Event::FindUser,
        Event::FindUserByKey,
        Event::ListUsers,
        Event::CreateGroup,
        Event::RenameGroup,
        Event::DeleteGroup,
        Event::GetGroup,
        Event::FindGroup,
        Event::FindGroupByKey,
        Event::ListGroups,
        Event::AddMembers,
        Event::RemoveMembers,
        Event::SetMembers,
    ];

    /// The key under `[target.events]`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Event::CreateUser => "create_user",
            Event::UpdateUser => "update_user",
            Event::ActivateUser => "activate_user",
            Event::DeactivateUser => "deactivate_user",
            Event::DeleteUser => "delete_user",
            Event::FindUser => "find_user",
            Event::FindUserByKey => "find_user_by_key",
            Event::ListUsers => "list_users",
            Event::CreateGroup => "create_group",
            Event::RenameGroup => "rename_group",
            Event::DeleteGroup => "delete_group",
            Event::GetGroup => "get_group",
            Event::FindGroup => "find_group",
            Event::FindGroupByKey => "find_group_by_key",
            Event::ListGroups => "list_groups",
            Event::AddMembers => "add_members",
            Event::RemoveMembers => "remove_members",
            Event::SetMembers => "set_members",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The values its templates may name (user events may name custom attributes too).
    pub(crate) fn placeholders(self) -> &'static [&'static str] {
        match self {
            Event::CreateUser => &[
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
                "externalId",
            ],
            Event::UpdateUser => &[
                "id",
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
            ],
            Event::ActivateUser | Event::DeactivateUser | Event::DeleteUser => &["id"],
            Event::FindUser => &["userName"],
            Event::FindUserByKey | Event::FindGroupByKey => &["externalId"],
            Event::ListUsers | Event::ListGroups => &["page"],
            Event::CreateGroup => &["displayName", "externalId", "members"],
            Event::RenameGroup => &["id", "displayName"],
            Event::DeleteGroup | Event::GetGroup => &["id"],
            Event::FindGroup => &["displayName"],
            Event::AddMembers | Event::RemoveMembers | Event::SetMembers => {
                &["id", "member", "members"]
            }
        }
    }

    /// Events about one user whose templates may also name custom attributes.
    pub(crate) fn names_user_fields(self) -> bool {
        matches!(self, Event::CreateUser | Event::UpdateUser)
    }
}

/// How one event is sent and its answer read.
#[derive(Debug, Clone)]
pub(crate) struct EventConfig {
    pub method: reqwest::Method,
    /// Path and query, relative to `target.url`, with placeholders.
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body as a structure whose strings may hold placeholders.
    pub body: Option<Value>,
    pub format: BodyFormat,
    /// Statuses that mean success; empty: any 2xx.
    pub expect: Vec<u16>,
    /// Where the answer to a create holds the new object's id (dotted path).
    pub id: Option<String>,
    /// The value sent that identifies the created object, for APIs whose answer has no id
    /// (miniOrange's users are named by `username`).
    pub id_from: Option<String>,
    /// Where a list or look-up answer holds the array of objects (dotted path; none: the
    /// answer itself, or the one object it is).
    pub data: Option<String>,
    /// Where a list answer holds the next page's value (cursor, page number or next URL).
    pub next: Option<String>,
    /// The first page number, for APIs paged by number.
    pub start_page: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BodyFormat {
    Json,
    Form,
}

/// What a value the object lacks becomes in a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Missing {
    /// The key is left out.
    Omit,
    /// The key is sent with `null`.
    Null,
}

/// How answers are judged, for every event.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResponseRules {
    /// A 2xx answer is a success only when the value at this path equals `success_value`
    /// (APIs that answer 200 with `{"status": "ERROR"}`).
    pub success_path: Option<String>,
    pub success_value: Option<Value>,
    /// Where an answer holds its error message.
    pub message_path: Option<String>,
    /// Statuses that mean "already exists" (409 by default).
    pub exists_statuses: Vec<u16>,
    /// Text in an error message that means "already exists" / "not found" (case-insensitive).
    pub exists_message: Option<String>,
    pub not_found_message: Option<String>,
    /// Values at `success_path` that mean "no such object" (a look-up that found nothing).
    pub not_found_values: Vec<Value>,
}

/// Where a listed or looked-up object holds each canonical field (dotted paths; `*` maps over
/// an array: `members.*.value`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPaths {
    pub paths: BTreeMap<String, String>,
}

/// A REST target: one configuration per event.
#[derive(Debug, Clone)]
pub(crate) struct RestConfig {
    pub events: BTreeMap<Event, EventConfig>,
    pub response: ResponseRules,
    pub user_fields: FieldPaths,
    pub group_fields: FieldPaths,
    pub missing: Missing,
    /// The custom attributes mapped (names templates may use).
    pub custom: Vec<String>,
    /// miniOrange's customer key, which every body carries as `{customerKey}`.
    pub customer_key: Option<String>,
}
