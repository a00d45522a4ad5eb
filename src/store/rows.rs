//! Rows as stored. Conversion to domain types happens in the per-table modules.

use diesel::prelude::*;

use super::schema::{directories, directory_keys, groups, user_values, users};

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = directories)]
pub struct DirectoryRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub created_at: i64,
    /// `deactivate` or `delete` (see `directories::DeletionPolicy`).
    pub deletion: String,
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
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = user_values)]
pub struct UserValueRow<'a> {
    pub directory_id: &'a str,
    pub user_id: &'a str,
    pub attr: &'a str,
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
