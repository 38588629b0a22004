//! SCIM 2.0 client (RFC 7643 resources, RFC 7644 protocol).

mod client;
pub(crate) mod decode;
mod discover;
mod encode;
mod find;
mod local_patch;
mod lookup;
pub(crate) mod path;
pub(crate) mod preview;
mod resources;

pub(crate) use client::ScimClient;

pub(crate) const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub(crate) const CORE_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub(crate) const ENTERPRISE_USER: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// The enterprise attributes dirbridge maps, as full paths.
pub(crate) const ENT_DEPARTMENT: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department";
pub(crate) const ENT_EMPLOYEE_NUMBER: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber";
pub(crate) const ENT_MANAGER: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";
pub(crate) const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A string as a SCIM filter value: a JSON string literal, so quotes, backslashes and control
/// characters in a userName cannot change the filter (RFC 7644 §3.4.2.2).
pub(crate) fn filter_literal(value: &str) -> String {
    serde_json::Value::String(value.to_string()).to_string()
}

#[cfg(test)]
mod tests;
