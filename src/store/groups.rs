//! Groups: one row in `groups` (name and externalId in indexed columns, the rest as JSON) and one
//! `group_members` row per member, indexed both ways. Membership changes touch only the members a
//! request names, so their cost never depends on the size of the group.

use std::collections::{BTreeSet, HashMap};

use diesel::prelude::*;
use serde_json::{json, Value};

use super::audit::{self, Actor, ResourceType};
use super::filter_sql::{self, SqlFragment, SqlPart, Statement};
use super::keys::Principal;
use super::rows::{CountRow, GroupRow};
use super::schema::{group_members, groups, users};
use super::{check_version, now_millis, parse_stored, DbConn, Store};
use crate::error::{Error, Result};
use crate::ids::DirectoryId;
use crate::scim::filter;
use crate::scim::index::{self, Column};
use crate::scim::list::{ListRequest, SortOrder};
pub use crate::scim::members::MemberChanges;
use crate::scim::path;
use crate::scim::resource::{changed_attributes, Meta, Stored};
use crate::scim::schema::{Registry, ResourceSchema};

/// A member as returned: the user's id and, for `display`, their userName.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    pub user_name: String,
}

/// A stored group with its server-owned metadata. `members` is None when the request's
/// projection drops them, so they were never read.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRecord {
    pub meta: Meta,
    pub resource: Stored,
    pub members: Option<Vec<Member>>,
}

/// A group a user belongs to, for the user's read-only `groups` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    pub group_id: String,
    pub display_name: String,
}

/// SQLite allows 32,766 bound parameters per statement; stay well under it.
const CHUNK: usize = 500;

fn record(row: GroupRow, members: Option<Vec<Member>>) -> Result<GroupRecord> {
    let resource = parse_stored("group", &row.id, &row.data)?;
    Ok(GroupRecord {
        meta: Meta {
            id: row.id,
            created_at: row.created_at,
            modified_at: row.modified_at,
            version: row.version,
        },
        resource,
        members,
    })
}

fn row_for(directory: &DirectoryId, meta: &Meta, resource: &Stored) -> Result<GroupRow> {
    let display_name = resource
        .get("displayName")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::InvalidValue("attribute 'displayName' is required".into()))?
        .to_string();
    Ok(GroupRow {
        id: meta.id.clone(),
        directory_id: directory.0.clone(),
        display_name_folded: index::fold(&display_name),
        display_name,
        external_id: resource.get("externalId").and_then(Value::as_str).map(str::to_string),
        data: serde_json::to_string(resource).map_err(|e| Error::internal("serialising a group", e))?,
        created_at: meta.created_at,
        modified_at: meta.modified_at,
        version: meta.version,
    })
}

fn unique_display_name(error: diesel::result::Error, resource: &Stored) -> Error {
    match error {
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _) => {
            Error::Uniqueness(format!(
                "a Group named '{}' already exists in this directory (displayName is compared \
                 case-insensitively)",
                resource.get("displayName").and_then(Value::as_str).unwrap_or_default()
            ))
        }
        other => other.into(),
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no Group with id '{id}' in this directory"))
}

/// Fails, naming them, if any of `ids` is not a user of this directory.
fn check_users_exist(conn: &mut DbConn, directory: &DirectoryId, ids: &BTreeSet<String>) -> Result<()> {
    let wanted: Vec<&String> = ids.iter().collect();
    let mut found = BTreeSet::new();
    for chunk in wanted.chunks(CHUNK) {
        let existing: Vec<String> = users::table
            .filter(users::directory_id.eq(&directory.0))
            .filter(users::deprovisioned_at.is_null())
            .filter(users::id.eq_any(chunk))
            .select(users::id)
            .load(conn)?;
        found.extend(existing);
    }
    let unknown: Vec<&str> = ids.iter().filter(|id| !found.contains(*id)).map(String::as_str).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 20;
    let mut named = unknown.iter().take(SHOWN).map(|id| format!("'{id}'")).collect::<Vec<_>>().join(", ");
    if unknown.len() > SHOWN {
        named.push_str(&format!(" and {} more", unknown.len() - SHOWN));
    }
    Err(Error::InvalidValue(format!(
        "members must be users of this directory; unknown member id{} {named}: nothing was changed",
        if unknown.len() == 1 { "" } else { "s" }
    )))
}

/// Applies `changes` to the membership of `group_id`; returns whether anything changed.
fn apply_member_changes(
    conn: &mut DbConn,
    directory: &DirectoryId,
    group_id: &str,
    changes: &MemberChanges,
) -> Result<bool> {
    check_users_exist(conn, directory, &changes.add)?;
    let mut changed = 0usize;
    if changes.clear {
        changed += diesel::delete(group_members::table.filter(group_members::group_id.eq(group_id)))
            .execute(conn)?;
    }
    let removed: Vec<&String> = changes.remove.iter().collect();
    for chunk in removed.chunks(CHUNK) {
        changed += diesel::delete(
            group_members::table
                .filter(group_members::group_id.eq(group_id))
                .filter(group_members::user_id.eq_any(chunk)),
        )
        .execute(conn)?;
    }
    let backend = conn.backend();
    let added: Vec<&String> = changes.add.iter().collect();
    for chunk in added.chunks(CHUNK) {
        // Adding a member who is already there is a no-op, not an error. diesel has no portable
        // multi-row ON CONFLICT, and both backends speak this one.
        let mut insert = SqlFragment::new(backend);
        insert.push_sql("INSERT INTO group_members (directory_id, group_id, user_id) VALUES ");
        for (n, user_id) in chunk.iter().enumerate() {
            insert.push_sql(if n == 0 { "(" } else { ", (" });
            insert.push(SqlPart::Text(directory.0.clone()));
            insert.push_sql(", ");
            insert.push(SqlPart::Text(group_id.to_string()));
            insert.push_sql(", ");
            insert.push(SqlPart::Text((*user_id).clone()));
            insert.push_sql(")");
        }
        insert.push_sql(" ON CONFLICT DO NOTHING");
        changed += Statement::once(insert).execute(conn)?;
    }
    Ok(changed > 0)
}

/// Creates a group with its initial members.
pub fn insert(
    conn: &mut DbConn,
    directory: &DirectoryId,
    actor: &Actor,
    resource: Stored,
    members: BTreeSet<String>,
) -> Result<GroupRecord> {
    let now = now_millis();
    let meta = Meta { id: crate::ids::GroupId::generate().0, created_at: now, modified_at: now, version: 1 };
    let row = row_for(directory, &meta, &resource)?;
    diesel::insert_into(groups::table)
        .values(&row)
        .execute(conn)
        .map_err(|e| unique_display_name(e, &resource))?;
    let attributes: Vec<&String> = resource.keys().collect();
    let details = json!({ "attributes": attributes });
    audit::record(conn, actor, group_change(directory, &meta.id, ResourceType::Group, "create", details))?;
    let changes = MemberChanges { add: members, ..MemberChanges::default() };
    if apply_member_changes(conn, directory, &meta.id, &changes)? {
        record_membership(conn, directory, actor, &meta.id, &changes)?;
    }
    let members = load_members(conn, &meta.id)?;
    Ok(GroupRecord { meta, resource, members: Some(members) })
}

fn find_row(conn: &mut DbConn, directory: &DirectoryId, id: &str) -> Result<Option<GroupRow>> {
    Ok(groups::table
        .filter(groups::directory_id.eq(&directory.0))
        .filter(groups::id.eq(id))
        .select(GroupRow::as_select())
        .first(conn)
        .optional()?)
}

/// The members of a group, in id order (creation order of the users).
pub fn load_members(conn: &mut DbConn, group_id: &str) -> Result<Vec<Member>> {
    Ok(group_members::table
        .inner_join(users::table)
        .filter(group_members::group_id.eq(group_id))
        .select((group_members::user_id, users::user_name))
        .order(group_members::user_id.asc())
        .load::<(String, String)>(conn)?
        .into_iter()
        .map(|(user_id, user_name)| Member { user_id, user_name })
        .collect())
}

/// The members of each of `group_ids` (a page of a listing), with one query per chunk.
fn members_of(conn: &mut DbConn, group_ids: &[&str]) -> Result<HashMap<String, Vec<Member>>> {
    let mut by_group: HashMap<String, Vec<Member>> = HashMap::new();
    for chunk in group_ids.chunks(CHUNK) {
        let rows: Vec<(String, String, String)> = group_members::table
            .inner_join(users::table)
            .filter(group_members::group_id.eq_any(chunk))
            .select((group_members::group_id, group_members::user_id, users::user_name))
            .order((group_members::group_id.asc(), group_members::user_id.asc()))
            .load(conn)?;
        for (group_id, user_id, user_name) in rows {
            by_group.entry(group_id).or_default().push(Member { user_id, user_name });
        }
    }
    Ok(by_group)
}

/// Another directory's group is reported exactly like a missing one. `with_members: false`
/// never reads the membership.
pub fn get(conn: &mut DbConn, directory: &DirectoryId, id: &str, with_members: bool) -> Result<GroupRecord> {
    let row = find_row(conn, directory, id)?.ok_or_else(|| not_found(id))?;
    let members = if with_members { Some(load_members(conn, id)?) } else { None };
    record(row, members)
}

/// Changes a group: its attributes through `change`, its membership by `changes`. The version
/// moves only when something really changed. Members are read back only if `with_members`.
#[allow(clippy::too_many_arguments)] // each is one part of the request; a struct would only rename them
pub fn modify(
    conn: &mut DbConn,
    directory: &DirectoryId,
    actor: &Actor,
    id: &str,
    if_match: Option<&str>,
    change: impl FnOnce(&Stored) -> Result<Stored>,
    changes: &MemberChanges,
    with_members: bool,
) -> Result<GroupRecord> {
    let row = find_row(conn, directory, id)?.ok_or_else(|| not_found(id))?;
    let current = record(row, None)?;
    check_version(&current.meta, if_match)?;
    check_owner(conn, actor, id)?;
    let resource = change(&current.resource)?;
    let members_changed = apply_member_changes(conn, directory, id, changes)?;
    if members_changed {
        record_membership(conn, directory, actor, id, changes)?;
    }
    if resource != current.resource {
        let details = json!({ "attributes": changed_attributes(&current.resource, &resource) });
        audit::record(conn, actor, group_change(directory, id, ResourceType::Group, "update", details))?;
    }
    let meta = if resource != current.resource || members_changed {
        let meta = Meta {
            modified_at: now_millis().max(current.meta.modified_at),
            version: current.meta.version + 1,
            ..current.meta
        };
        let row = row_for(directory, &meta, &resource)?;
        diesel::update(groups::table.find(id))
            .set(&row)
            .execute(conn)
            .map_err(|e| unique_display_name(e, &resource))?;
        meta
    } else {
        current.meta
    };
    let members = if with_members { Some(load_members(conn, id)?) } else { None };
    Ok(GroupRecord { meta, resource, members })
}

/// Deletes a group and its memberships (never the users).
pub fn delete(
    conn: &mut DbConn,
    directory: &DirectoryId,
    actor: &Actor,
    id: &str,
    if_match: Option<&str>,
) -> Result<()> {
    let row = find_row(conn, directory, id)?.ok_or_else(|| not_found(id))?;
    let current = record(row, None)?;
    check_version(&current.meta, if_match)?;
    check_owner(conn, actor, id)?;
    audit::record(conn, actor, group_change(directory, id, ResourceType::Group, "delete", json!({})))?;
    diesel::delete(group_members::table.filter(group_members::group_id.eq(id))).execute(conn)?;
    diesel::delete(groups::table.filter(groups::id.eq(id))).execute(conn)?;
    Ok(())
}

/// Rule 7 of the pull-sync contract, as for users: an imported group is its connection's.
fn check_owner(conn: &mut DbConn, actor: &Actor, id: &str) -> Result<()> {
    let owner: Option<String> = groups::table.find(id).select(groups::source_connection).first(conn)?;
    super::connections::check_owner(conn, actor, owner, "group")
}

/// The group a connection imported from `source_id`, if any.
pub fn find_owned(conn: &mut DbConn, connection_id: &str, source_id: &str) -> Result<Option<String>> {
    Ok(groups::table
        .filter(groups::source_connection.eq(connection_id))
        .filter(groups::source_id.eq(source_id))
        .select(groups::id)
        .first(conn)
        .optional()?)
}

/// Marks a group as the connection's, with its id in the source.
pub fn claim(conn: &mut DbConn, id: &str, connection_id: &str, source_id: &str) -> Result<()> {
    diesel::update(groups::table.find(id))
        .set((groups::source_connection.eq(connection_id), groups::source_id.eq(source_id)))
        .execute(conn)?;
    Ok(())
}

/// The source ids of every group the connection owns.
pub fn owned_source_ids(conn: &mut DbConn, connection_id: &str) -> Result<Vec<String>> {
    Ok(groups::table
        .filter(groups::source_connection.eq(connection_id))
        .select(groups::source_id.assume_not_null())
        .load(conn)?)
}

fn group_change<'a>(
    directory: &'a DirectoryId,
    id: &'a str,
    resource_type: ResourceType,
    operation: &'static str,
    details: Value,
) -> audit::Change<'a> {
    audit::Change { directory: Some(directory), resource_type, resource_id: id, operation, details }
}

/// The membership change as asked: members named to add or remove, or the list cleared.
fn record_membership(
    conn: &mut DbConn,
    directory: &DirectoryId,
    actor: &Actor,
    group_id: &str,
    changes: &MemberChanges,
) -> Result<()> {
    let added: Vec<&str> = changes.add.iter().map(String::as_str).collect();
    let removed: Vec<&str> = changes.remove.iter().map(String::as_str).collect();
    let details = audit::membership_details(changes.clear, &added, &removed);
    audit::record(conn, actor, group_change(directory, group_id, ResourceType::Membership, "change", details))
}

/// The groups each of `user_ids` belongs to, for their `groups` attribute.
pub fn groups_of(conn: &mut DbConn, user_ids: &[&str]) -> Result<HashMap<String, Vec<GroupRef>>> {
    let backend = conn.backend();
    let mut by_user: HashMap<String, Vec<GroupRef>> = HashMap::new();
    for chunk in user_ids.chunks(GROUPS_OF_CHUNK) {
        // Every user read runs this, so it must stay prepared. diesel never caches a dynamic
        // `IN` list; padding the list to a power of two (repeating the last id) keeps the
        // statement to a few shapes that can be.
        let Some(last) = chunk.last() else { continue };
        let width = chunk.len().next_power_of_two();
        let mut sql = SqlFragment::new(backend);
        sql.push_sql(
            "SELECT gm.user_id AS user_id, g.id AS group_id, g.display_name AS display_name \
             FROM group_members gm JOIN groups g ON g.id = gm.group_id WHERE gm.user_id IN (",
        );
        for n in 0..width {
            sql.push_sql(if n == 0 { "" } else { ", " });
            sql.push(SqlPart::Text(chunk.get(n).unwrap_or(last).to_string()));
        }
        sql.push_sql(") ORDER BY gm.user_id, g.id");
        let rows: Vec<GroupOfRow> = Statement::cached(sql).load(conn)?;
        for row in rows {
            by_user
                .entry(row.user_id)
                .or_default()
                .push(GroupRef { group_id: row.group_id, display_name: row.display_name });
        }
    }
    Ok(by_user)
}

/// At most this many users' groups per statement: a power of two, so padding stays in bounds.
const GROUPS_OF_CHUNK: usize = 256;

#[derive(Debug, QueryableByName)]
struct GroupOfRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    user_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    group_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    display_name: String,
}

/// One page of a group listing.
#[derive(Debug, Clone)]
pub struct GroupQuery {
    pub filter: Option<SqlFragment>,
    pub sort: Option<(Column, SortOrder)>,
    /// 0-based offset.
    pub offset: u64,
    pub limit: u64,
    pub with_members: bool,
}

fn sort_column(column: Column) -> &'static str {
    match column {
        Column::ExternalId => "groups.external_id",
        Column::DisplayName => "groups.display_name_folded",
        Column::Created => "groups.created_at",
        Column::LastModified => "groups.modified_at",
        Column::Id | Column::UserName | Column::Active => "groups.id",
    }
}

fn from_where(sql: &mut SqlFragment, directory: &DirectoryId, filter: &Option<SqlFragment>) {
    sql.push_sql(" FROM groups WHERE groups.directory_id = ");
    sql.push(SqlPart::Text(directory.0.clone()));
    if let Some(fragment) = filter {
        sql.push_sql(" AND (");
        sql.append(fragment.clone());
        sql.push_sql(")");
    }
}

/// Counts the matches and loads one page, ordered by the sort key, then by id.
pub fn list(
    conn: &mut DbConn,
    directory: &DirectoryId,
    query: &GroupQuery,
) -> Result<(u64, Vec<GroupRecord>)> {
    let backend = conn.backend();
    let rows: Vec<GroupRow> = if query.limit == 0 {
        Vec::new()
    } else {
        let mut page = SqlFragment::new(backend);
        page.push_sql("SELECT groups.*");
        from_where(&mut page, directory, &query.filter);
        page.push_sql(" ORDER BY ");
        if let Some((column, order)) = query.sort {
            let name = sort_column(column);
            let direction = match order {
                SortOrder::Ascending => " ASC, ",
                SortOrder::Descending => " DESC, ",
            };
            // Unassigned values sort last ascending and first descending, as for users.
            page.push_sql(&format!(
                "(CASE WHEN {name} IS NULL THEN 1 ELSE 0 END){direction}{name}{direction}"
            ));
        }
        page.push_sql("groups.id ASC LIMIT ");
        page.push(SqlPart::BigInt(i64::try_from(query.limit).unwrap_or(i64::MAX)));
        page.push_sql(" OFFSET ");
        page.push(SqlPart::BigInt(i64::try_from(query.offset).unwrap_or(i64::MAX)));
        Statement::once(page).load(conn)?
    };
    let returned = u64::try_from(rows.len()).unwrap_or(u64::MAX);
    let total = if returned < query.limit && (returned > 0 || query.offset == 0) {
        query.offset + returned
    } else {
        let mut count = SqlFragment::new(backend);
        count.push_sql("SELECT COUNT(*) AS n");
        from_where(&mut count, directory, &query.filter);
        let counted: CountRow = Statement::once(count).get_result(conn)?;
        u64::try_from(counted.n).unwrap_or(0)
    };
    let mut members = if query.with_members {
        let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
        Some(members_of(conn, &ids)?)
    } else {
        None
    };
    let mut records = Vec::with_capacity(rows.len());
    for row in rows {
        let group_members = members.as_mut().map(|by_group| by_group.remove(&row.id).unwrap_or_default());
        records.push(record(row, group_members)?);
    }
    Ok((total, records))
}

/// `sortBy` for groups: an attribute with a column.
fn sort_key(schema: &ResourceSchema, name: &str) -> Result<Column> {
    path::resolve_name(schema, name).ok().and_then(|a| a.compared()).and_then(|a| a.column()).ok_or_else(
        || {
            Error::InvalidValue(format!(
                "sortBy '{name}' is not a sortable attribute of Group (use displayName, externalId, id, \
             meta.created or meta.lastModified)"
            ))
        },
    )
}

impl Store {
    /// A write to a directory's groups; it changes what users' `groups` show, so lists
    /// remembered of the directory's users are stale too.
    async fn write_groups<T, F>(&self, principal: Principal, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &Registry, &DirectoryId) -> Result<T> + Send + 'static,
    {
        let directory = principal.directory_id.clone();
        let written = self.write_as(principal, work).await?;
        self.list_cache.changed(&directory.0);
        Ok(written)
    }

    pub async fn create_group(
        &self,
        principal: Principal,
        resource: Stored,
        members: BTreeSet<String>,
    ) -> Result<GroupRecord> {
        let actor = Actor::Key(principal.key_id.clone());
        self.write_groups(principal, move |conn, _, directory| {
            insert(conn, directory, &actor, resource, members)
        })
        .await
    }

    pub async fn get_group(
        &self,
        principal: Principal,
        id: String,
        with_members: bool,
    ) -> Result<GroupRecord> {
        self.read_as(principal, move |conn, _, directory| get(conn, directory, &id, with_members)).await
    }

    /// Changes a group; `change` runs on the current attributes inside the transaction.
    #[allow(clippy::too_many_arguments)] // each is one part of the request; a struct would only rename them
    pub async fn modify_group<F>(
        &self,
        principal: Principal,
        id: String,
        if_match: Option<String>,
        change: F,
        changes: MemberChanges,
        with_members: bool,
    ) -> Result<GroupRecord>
    where
        F: FnOnce(&Stored, &Registry) -> Result<Stored> + Send + 'static,
    {
        let actor = Actor::Key(principal.key_id.clone());
        self.write_groups(principal, move |conn, registry, directory| {
            let change = |current: &Stored| change(current, registry);
            modify(conn, directory, &actor, &id, if_match.as_deref(), change, &changes, with_members)
        })
        .await
    }

    pub async fn delete_group(
        &self,
        principal: Principal,
        id: String,
        if_match: Option<String>,
    ) -> Result<()> {
        let actor = Actor::Key(principal.key_id.clone());
        self.write_groups(principal, move |conn, _, directory| {
            delete(conn, directory, &actor, &id, if_match.as_deref())
        })
        .await
    }

    /// A list or search of groups: the filter is checked against the Group schema and compiled
    /// to SQL; `with_members: false` never reads a membership.
    pub async fn search_groups(
        &self,
        principal: Principal,
        request: ListRequest,
        with_members: bool,
    ) -> Result<(u64, Vec<GroupRecord>)> {
        let schema = &self.registry().group;
        let filter = match &request.filter {
            Some(text) => {
                let parsed = filter::parse(text, schema)?;
                let sql = filter_sql::compile_group(&parsed, &principal.directory_id.0, self.backend())
                    .map_err(|detail| Error::InvalidFilter(format!("filter: {detail}")))?;
                Some(sql)
            }
            None => None,
        };
        let sort = match &request.sort_by {
            Some(name) => Some((sort_key(schema, name)?, request.sort_order.unwrap_or(SortOrder::Ascending))),
            None => None,
        };
        let query = GroupQuery {
            filter,
            sort,
            offset: request.start_index.saturating_sub(1),
            limit: request.count,
            with_members,
        };
        self.read_as(principal, move |conn, _, directory| {
            let mut query = query;
            if let Some(cap) = super::directories::page_cap(conn, directory)? {
                query.limit = query.limit.min(cap);
            }
            list(conn, directory, &query)
        })
        .await
    }
}
