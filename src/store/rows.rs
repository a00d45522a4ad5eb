//! Rows as stored. Conversion to domain types happens in the per-table modules.

use diesel::prelude::*;

use super::schema::{
    admin_tokens, audit_events, directories, directory_keys, groups, secrets, user_values, users,
};

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = directories)]
pub struct DirectoryRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub created_at: i64,
    /// `deactivate` or `delete` (see `directories::DeletionPolicy`).
    pub deletion: String,
    /// Largest SCIM page served; `None`: the server's `scim.max_page_size`.
    pub max_page_size: Option<i32>,
    /// Whether the people lookup shows deactivated people (with a badge) or hides them.
    pub lookup_show_deactivated: bool,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = directory_keys)]
pub struct KeyRow {
    pub id: String,
    pub directory_id: String,
    pub name: String,
    pub lookup: String,
    pub hash: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// An admin token; the same columns as a directory key, without a directory.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = admin_tokens)]
pub struct AdminTokenRow {
    pub id: String,
    pub name: String,
    pub lookup: String,
    pub hash: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events, treat_none_as_null = true)]
pub struct AuditRow {
    pub id: String,
    pub at: i64,
    pub directory_id: Option<String>,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub operation: String,
    pub details: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = secrets)]
pub struct SecretRow {
    pub id: String,
    pub directory_id: String,
    pub owner: String,
    pub name: String,
    /// Hex of the 96-bit AES-GCM nonce.
    pub nonce: String,
    /// Hex of the ciphertext and its tag.
    pub ciphertext: String,
    pub created_at: i64,
    pub rotated_at: i64,
}

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = users, treat_none_as_null = true)]
pub struct UserRow {
    pub id: String,
    pub directory_id: String,
    pub user_name: String,
    pub user_name_folded: String,
    pub external_id: Option<String>,
    pub display_name_folded: Option<String>,
    pub active: bool,
    pub data: String,
    pub created_at: i64,
    pub modified_at: i64,
    pub version: i64,
    /// The user the manager resolves to (see `users::resolve_manager`).
    pub manager_id: Option<String>,
    /// Set when a SCIM DELETE deprovisioned the user under the `deactivate` policy.
    pub deprovisioned_at: Option<i64>,
    /// The folded manager name, when the link does not come from the manager's value (see
    /// `users::ManagerLink`).
    pub manager_name_pending: Option<String>,
}

/// A user row as created, with the source that owns it (a connection, or none for SCIM push).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = users, treat_none_as_null = true)]
pub struct NewUserRow {
    #[diesel(embed)]
    pub row: UserRow,
    pub source_connection: Option<String>,
    pub source_id: Option<String>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = user_values)]
pub struct UserValueRow<'a> {
    pub user_id: &'a str,
    /// The attribute's number in `value_attrs` (see `store::values`).
    pub attr_id: i32,
    pub pos: i32,
    pub value: &'a str,
}

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = groups, treat_none_as_null = true)]
pub struct GroupRow {
    pub id: String,
    pub directory_id: String,
    pub display_name: String,
    pub display_name_folded: String,
    pub external_id: Option<String>,
    pub data: String,
    pub created_at: i64,
    pub modified_at: i64,
    pub version: i64,
}

#[derive(Debug, QueryableByName)]
pub struct CountRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub n: i64,
}

#[derive(Debug, QueryableByName)]
pub struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub id: String,
}
