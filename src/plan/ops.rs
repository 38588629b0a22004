//! The operations a plan is made of. They name objects by stable key; target ids are resolved
//! when an operation is sent, since a plan may create what later operations refer to.

use std::sync::Arc;

use serde::Serialize;

use crate::model::{FieldChange, Key, User};

/// Largest number of members one add or remove operation carries (one PATCH request).
pub(crate) const MEMBER_BATCH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Operation {
    CreateUser {
        key: Key,
        #[serde(rename = "userName")]
        user_name: String,
        user: Arc<User>,
    },
    UpdateUser {
        key: Key,
        #[serde(rename = "userName")]
        user_name: String,
        /// What differs from the last pushed state, at planning time.
        changes: Vec<FieldChange>,
        /// The whole desired user: the change list is recomputed when the operation is sent.
        #[serde(skip)]
        desired: Arc<User>,
    },
    DeactivateUser {
        key: Key,
        #[serde(rename = "userName")]
        user_name: String,
        reason: RemovalReason,
    },
    DeleteUser {
        key: Key,
        #[serde(rename = "userName")]
        user_name: String,
        reason: RemovalReason,
    },
    CreateGroup {
        key: Key,
        #[serde(rename = "displayName")]
        display_name: String,
    },
    UpdateGroup {
        key: Key,
        #[serde(rename = "displayName")]
        display_name: String,
        #[serde(rename = "previousDisplayName")]
        previous: String,
    },
    DeleteGroup {
        key: Key,
        #[serde(rename = "displayName")]
        display_name: String,
    },
    AddMembers {
        group: Key,
        #[serde(rename = "displayName")]
        display_name: String,
        members: Vec<Key>,
    },
    RemoveMembers {
        group: Key,
        #[serde(rename = "displayName")]
        display_name: String,
        members: Vec<Key>,
    },
}

/// Why a user is deactivated or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RemovalReason {
    /// Disabled in the directory (`sync.on_disable`).
    Disabled,
    /// No longer in the directory or the user filter (`sync.on_remove`).
    Removed,
}

impl Operation {
    /// The key of the object the operation is about (the group, for membership changes).
    pub(crate) fn key(&self) -> &Key {
        match self {
            Operation::CreateUser { key, .. }
            | Operation::UpdateUser { key, .. }
            | Operation::DeactivateUser { key, .. }
            | Operation::DeleteUser { key, .. }
            | Operation::CreateGroup { key, .. }
            | Operation::UpdateGroup { key, .. }
            | Operation::DeleteGroup { key, .. } => key,
            Operation::AddMembers { group, .. } | Operation::RemoveMembers { group, .. } => group,
        }
    }

    /// The operation's name as in `plan --json`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Operation::CreateUser { .. } => "create_user",
            Operation::UpdateUser { .. } => "update_user",
            Operation::DeactivateUser { .. } => "deactivate_user",
            Operation::DeleteUser { .. } => "delete_user",
            Operation::CreateGroup { .. } => "create_group",
            Operation::UpdateGroup { .. } => "update_group",
            Operation::DeleteGroup { .. } => "delete_group",
            Operation::AddMembers { .. } => "add_members",
            Operation::RemoveMembers { .. } => "remove_members",
        }
    }

    /// The userName or group name it is about, for people.
    pub(crate) fn label(&self) -> &str {
        match self {
            Operation::CreateUser { user_name, .. }
            | Operation::UpdateUser { user_name, .. }
            | Operation::DeactivateUser { user_name, .. }
            | Operation::DeleteUser { user_name, .. } => user_name,
            Operation::CreateGroup { display_name, .. }
            | Operation::UpdateGroup { display_name, .. }
            | Operation::DeleteGroup { display_name, .. }
            | Operation::AddMembers { display_name, .. }
            | Operation::RemoveMembers { display_name, .. } => display_name,
        }
    }

    pub(crate) fn is_user_op(&self) -> bool {
        matches!(
            self,
            Operation::CreateUser { .. }
                | Operation::UpdateUser { .. }
                | Operation::DeactivateUser { .. }
                | Operation::DeleteUser { .. }
        )
    }
}
