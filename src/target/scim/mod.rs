//! SCIM 2.0 client (RFC 7643 resources, RFC 7644 protocol).

mod client;
pub mod decode;
mod discover;
mod encode;
mod find;
mod local_patch;
mod lookup;
pub(crate) mod path;
pub(crate) mod preview;
mod resources;

pub use client::ScimClient;

pub const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const CORE_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// The enterprise attributes dirbridge maps, as full paths.
pub const ENT_DEPARTMENT: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department";
pub const ENT_EMPLOYEE_NUMBER: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber";
pub const ENT_MANAGER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// A string as a SCIM filter value: a JSON string literal, so quotes, backslashes and control
/// characters in a userName cannot change the filter (RFC 7644 §3.4.2.2).
pub fn filter_literal(value: &str) -> String {
    serde_json::Value::String(value.to_string()).to_string()
}

#[cfg(test)]
mod tests;
