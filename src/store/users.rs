//! Users: one row in `users` (hot attributes in indexed columns, the resource as JSON) plus
//! one `user_values` row per other attribute value, kept in step in the same transaction.

use std::collections::HashMap;

use diesel::prelude::*;
use serde_json::{json, Value};

use super::audit::{self, Actor, ResourceType};
use super::directories::{self, DeletionPolicy};
use super::filter_sql::{self, SqlFragment, SqlPart, Statement};
use super::groups::{self, GroupRef};
use super::keys::Principal;
use super::list_cache::ListCache;
use super::rows::{CountRow, IdRow, NewUserRow, UserRow};
use super::schema::{group_members, user_values, users};
use super::values;
use super::{check_version, now_millis, parse_stored, Backend, DbConn, Store};
use crate::error::{Error, Result};
use crate::ids::{DirectoryId, UserId};
use crate::scim::index::{self, Column};
use crate::scim::list::{ListRequest, SortOrder};
use crate::scim::resource::{changed_attributes, Meta, Stored};
use crate::scim::schema::{Registry, ResourceSchema, ENTERPRISE_USER_SCHEMA};
use crate::scim::{filter, path};

/// A stored user with its server-owned metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub meta: Meta,
    pub resource: Stored,
    /// The groups the user belongs to, for the read-only `groups` attribute.
    pub groups: Vec<GroupRef>,
    /// The user the enterprise manager resolves to, if any (see [`resolve_manager`]).
    pub manager_id: Option<String>,
    /// That user's displayName, when the client sent the manager as an id only (Entra): the
    /// response fills it in.
    pub manager_name: Option<String>,
}

/// What to sort a listing by (already resolved against the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKey {
    Column(Column),
    /// An attribute in `user_values`, by index key; multi-valued ones sort by their smallest value.
    Value(String),
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct UserQuery {
    pub filter: Option<SqlFragment>,
    pub sort: Option<(SortKey, SortOrder)>,
    /// 0-based offset.
    pub offset: u64,
    pub limit: u64,
    /// The statements come from a bounded set of shapes and may stay prepared (see
    /// [`filter_sql::Statement`]).
    pub bounded_shape: bool,
    /// The filter is an equality on an indexed column ([`filter_sql::is_column_equality`]).
    pub column_equality: bool,
}

fn record(row: UserRow) -> Result<UserRecord> {
    let resource = parse_stored("user", &row.id, &row.data)?;
    Ok(UserRecord {
        meta: Meta {
            id: row.id,
            created_at: row.created_at,
            modified_at: row.modified_at,
            version: row.version,
        },
        resource,
        groups: Vec::new(),
        manager_id: row.manager_id,
        manager_name: None,
    })
}

/// Fills in each record's `groups` from the membership, with one query for all of them.
fn attach_groups(conn: &mut DbConn, records: &mut [UserRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = records.iter().map(|r| r.meta.id.as_str()).collect();
    let mut by_user = groups::groups_of(conn, &ids)?;
    for record in records.iter_mut() {
        record.groups = by_user.remove(&record.meta.id).unwrap_or_default();
    }
    attach_manager_names(conn, records)
}

/// Fills `manager_name` for records whose manager is linked but was sent without a
/// displayName, with one query for all of them.
fn attach_manager_names(conn: &mut DbConn, records: &mut [UserRecord]) -> Result<()> {
    let wanted: Vec<String> = records
        .iter()
        .filter(|r| manager_of(&r.resource).is_some_and(|m| !m.contains_key("displayName")))
        .filter_map(|r| r.manager_id.clone())
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let rows: Vec<(String, String)> =
        users::table.filter(users::id.eq_any(&wanted)).select((users::id, users::data)).load(conn)?;
    let names: std::collections::HashMap<String, String> = rows
        .into_iter()
        .filter_map(|(id, data)| {
            let resource: Value = serde_json::from_str(&data).ok()?;
            Some((id, resource.get("displayName")?.as_str()?.to_string()))
        })
        .collect();
    for record in records.iter_mut() {
        if let Some(id) = &record.manager_id {
            record.manager_name = names.get(id).cloned();
        }
    }
    Ok(())
}

fn text<'a>(resource: &'a Stored, key: &str) -> Option<&'a str> {
    resource.get(key).and_then(Value::as_str)
}

fn row_for(directory: &DirectoryId, meta: &Meta, resource: &Stored, manager: ManagerLink) -> Result<UserRow> {
    let user_name = text(resource, "userName")
        .ok_or_else(|| Error::InvalidValue("attribute 'userName' is required".into()))?
        .to_string();
    Ok(UserRow {
        id: meta.id.clone(),
        directory_id: directory.0.clone(),
        user_name_folded: index::fold(&user_name),
        user_name,
        external_id: text(resource, "externalId").map(str::to_string),
        display_name_folded: text(resource, "displayName").map(index::fold),
        active: resource.get("active").and_then(Value::as_bool).unwrap_or(true),
        data: serde_json::to_string(resource).map_err(|e| Error::internal("serialising a user", e))?,
        created_at: meta.created_at,
        modified_at: meta.modified_at,
        version: meta.version,
        manager_id: manager.id,
        deprovisioned_at: None,
        manager_name_pending: manager.pending_name,
    })
}

// --- The manager link: best effort, never an error (okta-push.md §4.1). ---

const MANAGER_VALUE_KEY: &str = "enterprise:manager.value";
const MANAGER_NAME_KEY: &str = "enterprise:manager.displayname";
const EMPLOYEE_NUMBER_KEY: &str = "enterprise:employeenumber";

fn manager_of(resource: &Stored) -> Option<&serde_json::Map<String, Value>> {
    resource.get(ENTERPRISE_USER_SCHEMA)?.get("manager")?.as_object()
}

fn employee_number(resource: &Stored) -> Option<&str> {
    resource.get(ENTERPRISE_USER_SCHEMA)?.get("employeeNumber")?.as_str()
}

/// The one id left once `self_id` is set aside (nobody manages themselves), if exactly one.
fn only_other(ids: &[String], self_id: &str) -> Option<String> {
    let mut others = ids.iter().filter(|id| *id != self_id);
    match (others.next(), others.next()) {
        (Some(id), None) => Some(id.clone()),
        _ => None,
    }
}

/// Where a user's enterprise manager points: the user it resolves to, and, when that does not
/// come from the manager's `value`, the folded name a newcomer could resolve it by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagerLink {
    pub id: Option<String>,
    pub pending_name: Option<String>,
}

/// The ways a manager names its user, tried in this order.
#[derive(Debug, Clone, Copy)]
enum NamedBy {
    /// `value` is the user's scimd id.
    Id,
    /// `value` is the user's externalId.
    ExternalId,
    /// `value` is the user's employeeNumber (compared folded).
    EmployeeNumber,
    /// `displayName` is the user's displayName (compared folded).
    DisplayName,
}

impl NamedBy {
    /// What a manager gives to be looked up this way.
    fn wanted(self, manager: &serde_json::Map<String, Value>) -> Option<String> {
        let value = manager.get("value").and_then(Value::as_str);
        match self {
            NamedBy::Id | NamedBy::ExternalId => value.map(str::to_string),
            NamedBy::EmployeeNumber => value.map(index::fold),
            NamedBy::DisplayName => manager.get("displayName").and_then(Value::as_str).map(index::fold),
        }
    }

    /// What a user offers to be found this way.
    fn offered(self, id: &str, resource: &Stored) -> Option<String> {
        match self {
            NamedBy::Id => Some(id.to_string()),
            NamedBy::ExternalId => text(resource, "externalId").map(str::to_string),
            NamedBy::EmployeeNumber => employee_number(resource).map(index::fold),
            NamedBy::DisplayName => text(resource, "displayName").map(index::fold),
        }
    }

    /// The live users of the directory offering each of `keys`, as key → ids: one query per 500.
    fn lookup(
        self,
        conn: &mut DbConn,
        directory: &DirectoryId,
        keys: &[&str],
    ) -> Result<HashMap<String, Vec<String>>> {
        let mut found: HashMap<String, Vec<String>> = HashMap::new();
        for chunk in keys.chunks(500) {
            let directory_users = users::table.filter(users::directory_id.eq(&directory.0));
            // (key, id, deprovisioned_at). Whether a user is live is checked here, not in SQL: with
            // that term SQLite walks the directory's live-users index rather than the key's.
            let rows: Vec<(Option<String>, String, Option<i64>)> = match self {
                // Here the term picks the index that holds the id: (directory, deprovisioned_at, id).
                NamedBy::Id => directory_users
                    .filter(users::deprovisioned_at.is_null())
                    .filter(users::id.eq_any(chunk))
                    .select((users::id.nullable(), users::id, users::deprovisioned_at))
                    .load(conn)?,
                NamedBy::ExternalId => directory_users
                    .filter(users::external_id.eq_any(chunk))
                    .select((users::external_id, users::id, users::deprovisioned_at))
                    .load(conn)?,
                NamedBy::DisplayName => directory_users
                    .filter(users::display_name_folded.eq_any(chunk))
                    .select((users::display_name_folded, users::id, users::deprovisioned_at))
                    .load(conn)?,
                NamedBy::EmployeeNumber => user_values::table
                    .inner_join(users::table.on(users::id.eq(user_values::user_id)))
                    .filter(user_values::attr_id.eq_any(values::numbered(directory, EMPLOYEE_NUMBER_KEY)))
                    .filter(user_values::value.eq_any(chunk))
                    .select((user_values::value.nullable(), user_values::user_id, users::deprovisioned_at))
                    .load(conn)?,
            };
            for (key, id, deprovisioned_at) in rows {
                if let (Some(key), None) = (key, deprovisioned_at) {
                    found.entry(key).or_default().push(id);
                }
            }
        }
        Ok(found)
    }
}

/// The user of the same directory that `resource`'s enterprise manager names, in order: a
/// `value` that is a scimd user id; a `value` that is exactly one user's externalId or
/// employeeNumber; a `displayName` that exactly one user has (case-insensitively). Ambiguous or
/// unknown names link nothing; the manager stays as the client sent it either way.
pub fn resolve_manager(
    conn: &mut DbConn,
    directory: &DirectoryId,
    self_id: &str,
    resource: &Stored,
) -> Result<ManagerLink> {
    let mut links = resolve_managers(conn, directory, &[(self_id, resource)], &[])?;
    Ok(links.pop().unwrap_or_default())
}

/// [`resolve_manager`] for each of `users` (id, resource), with at most four queries per 500
/// users. `fresh` are users being created with them, not yet in the database, and candidates
/// all the same: a batch may hold a manager and its reports.
fn resolve_managers(
    conn: &mut DbConn,
    directory: &DirectoryId,
    users: &[(&str, &Stored)],
    fresh: &[(&str, &Stored)],
) -> Result<Vec<ManagerLink>> {
    let managers: Vec<Option<&serde_json::Map<String, Value>>> =
        users.iter().map(|(_, resource)| manager_of(resource)).collect();
    // Each user's link, once a way has settled it, with what its manager gives the next way.
    let mut links: Vec<Option<ManagerLink>> = vec![None; users.len()];
    for way in [NamedBy::Id, NamedBy::ExternalId, NamedBy::EmployeeNumber, NamedBy::DisplayName] {
        let wanted: Vec<Option<String>> = managers
            .iter()
            .zip(&links)
            .map(|(manager, link)| if link.is_some() { None } else { way.wanted((*manager)?) })
            .collect();
        let mut keys: Vec<&str> = wanted.iter().flatten().map(String::as_str).collect();
        if keys.is_empty() {
            continue;
        }
        keys.sort_unstable();
        keys.dedup();
        // A name three live users share names no one, whoever else arrives: such names are not
        // read (common names would make every batch read hundreds of users each).
        let crowded: std::collections::HashSet<String> = match way {
            NamedBy::DisplayName => live_name_counts(conn, directory, &keys)?
                .into_iter()
                .filter(|(_, count)| *count >= 3)
                .map(|(name, _)| name)
                .collect(),
            _ => std::collections::HashSet::new(),
        };
        let looked_up: Vec<&str> = keys.iter().copied().filter(|key| !crowded.contains(*key)).collect();
        let mut found = way.lookup(conn, directory, &looked_up)?;
        for (id, resource) in fresh {
            if let Some(key) = way.offered(id, resource) {
                if keys.binary_search(&key.as_str()).is_ok() {
                    found.entry(key).or_default().push(id.to_string());
                }
            }
        }
        for ((link, key), (self_id, _)) in links.iter_mut().zip(wanted).zip(users) {
            let Some(key) = key else { continue };
            let candidates = found.get(&key).map(Vec::as_slice).unwrap_or_default();
            let resolved = if crowded.contains(&key) { None } else { only_other(candidates, self_id) };
            *link = match way {
                // A name that matches nobody, or several, still says who to wait for.
                NamedBy::DisplayName => Some(ManagerLink { id: resolved, pending_name: Some(key) }),
                _ => resolved.map(|id| ManagerLink { id: Some(id), pending_name: None }),
            };
        }
    }
    Ok(links.into_iter().map(Option::unwrap_or_default).collect())
}

/// How many live users of the directory have each of `names` (folded display names); names no
/// one has are absent. One query per 500 names, on the display-name index alone.
fn live_name_counts(
    conn: &mut DbConn,
    directory: &DirectoryId,
    names: &[&str],
) -> Result<HashMap<String, i64>> {
    let mut counts = HashMap::new();
    for chunk in names.chunks(500) {
        let rows: Vec<(Option<String>, i64)> = users::table
            .filter(users::directory_id.eq(&directory.0))
            .filter(users::display_name_folded.eq_any(chunk))
            .filter(users::deprovisioned_at.is_null())
            .group_by(users::display_name_folded)
            .select((users::display_name_folded, diesel::dsl::count_star()))
            .load(conn)?;
        counts.extend(rows.into_iter().filter_map(|(name, count)| Some((name?, count))));
    }
    Ok(counts)
}

/// A report whose manager's value is the id of `manager`, with its current link.
#[derive(Queryable)]
struct NamedById {
    report: String,
    manager: String,
    linked: Option<String>,
    pending: Option<String>,
    deprovisioned_at: Option<i64>,
}

/// After `written` (id, resource) were stored: the users whose manager names one of them (it
/// may have just arrived, or been renamed) and those linked to one are resolved again. Costs
/// the number of such reports, found through indexes, a few queries per 500 written users.
fn relink_reports(conn: &mut DbConn, directory: &DirectoryId, written: &[(&str, &Stored)]) -> Result<()> {
    let mut candidates: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let written_ids: std::collections::HashSet<&str> = written.iter().map(|(id, _)| *id).collect();
    // Reports whose manager's value is a written user's id are settled here: an id is the first
    // way a manager is named, and the written users are live. (An Entra import names every
    // manager by id; reading and resolving each such report again took 12.5 of a 100k import's
    // 100 s.)
    let mut settled: std::collections::HashSet<String> = std::collections::HashSet::new();
    for chunk in written.chunks(500) {
        let ids: Vec<&str> = chunk.iter().map(|(id, _)| *id).collect();
        candidates.extend(
            users::table
                .filter(users::directory_id.eq(&directory.0))
                .filter(users::manager_id.eq_any(&ids))
                .select(users::id)
                .load::<String>(conn)?,
        );
        let named_by_id: Vec<NamedById> = user_values::table
            .inner_join(users::table.on(users::id.eq(user_values::user_id)))
            .filter(user_values::attr_id.eq_any(values::numbered(directory, MANAGER_VALUE_KEY)))
            .filter(user_values::value.eq_any(&ids))
            .select((
                user_values::user_id,
                user_values::value,
                users::manager_id,
                users::manager_name_pending,
                users::deprovisioned_at,
            ))
            .load(conn)?;
        for NamedById { report, manager, linked, pending, deprovisioned_at } in named_by_id {
            if deprovisioned_at.is_some() || report == manager || written_ids.contains(report.as_str()) {
                continue;
            }
            if linked.as_deref() != Some(manager.as_str()) || pending.is_some() {
                diesel::update(users::table.find(&report))
                    .set((users::manager_id.eq(&manager), users::manager_name_pending.eq(None::<String>)))
                    .execute(conn)?;
            }
            settled.insert(report);
        }
        // Everyone whose manager names a written user by another value, then by name: two
        // lookups on whole index keys. (One query with OR between them makes SQLite scan the
        // directory's index range instead, which made every create cost the directory's size.)
        let values: Vec<&str> = chunk
            .iter()
            .flat_map(|(_, resource)| [text(resource, "externalId"), employee_number(resource)])
            .flatten()
            .collect();
        candidates.extend(
            user_values::table
                .filter(user_values::attr_id.eq_any(values::numbered(directory, MANAGER_VALUE_KEY)))
                .filter(user_values::value.eq_any(values))
                .select(user_values::user_id)
                .load::<String>(conn)?,
        );
        // By name: only reports whose link does not come from their manager's value can change,
        // and, of a name three live users now share, only those linked: it names no one now. A
        // name three shared before these users arrived has no such links left to undo (a 100k Entra
        // import, whose generated names were soon all shared, spent 4.3 s looking for them).
        let mut arrived: HashMap<String, i64> = HashMap::new();
        for (_, resource) in chunk {
            if let Some(name) = text(resource, "displayName") {
                *arrived.entry(index::fold(name)).or_default() += 1;
            }
        }
        let refs: Vec<&str> = arrived.keys().map(String::as_str).collect();
        let counts = live_name_counts(conn, directory, &refs)?;
        let count = |name: &str| counts.get(name).copied().unwrap_or(0);
        let (crowded, rare): (Vec<&str>, Vec<&str>) = refs.iter().partition(|name| count(name) >= 3);
        let crowded: Vec<&str> = crowded
            .into_iter()
            .filter(|name| count(name) - arrived.get(*name).copied().unwrap_or(0) < 3)
            .collect();
        let in_directory = || users::table.filter(users::directory_id.eq(&directory.0));
        if !rare.is_empty() {
            candidates.extend(
                in_directory()
                    .filter(users::manager_name_pending.eq_any(rare))
                    .select(users::id)
                    .load::<String>(conn)?,
            );
        }
        if !crowded.is_empty() {
            candidates.extend(
                in_directory()
                    .filter(users::manager_name_pending.eq_any(crowded))
                    .filter(users::manager_id.is_not_null())
                    .select(users::id)
                    .load::<String>(conn)?,
            );
        }
    }
    // The written users resolved their own managers as they were written.
    for (id, _) in written {
        candidates.remove(*id);
    }
    candidates.retain(|id| !settled.contains(id));
    let candidates: Vec<String> = candidates.into_iter().collect();
    for chunk in candidates.chunks(500) {
        let rows: Vec<UserRow> = users::table
            .filter(users::directory_id.eq(&directory.0))
            .filter(users::id.eq_any(chunk))
            .filter(users::deprovisioned_at.is_null())
            .select(UserRow::as_select())
            .load(conn)?;
        let current: Vec<(Option<String>, UserRecord)> = rows
            .into_iter()
            .map(|row| Ok((row.manager_name_pending.clone(), record(row)?)))
            .collect::<Result<_>>()?;
        let reports: Vec<(&str, &Stored)> =
            current.iter().map(|(_, report)| (report.meta.id.as_str(), &report.resource)).collect();
        let resolved = resolve_managers(conn, directory, &reports, &[])?;
        for ((pending_name, report), link) in current.iter().zip(resolved) {
            if link.id != report.manager_id || link.pending_name != *pending_name {
                diesel::update(users::table.find(&report.meta.id))
                    .set((users::manager_id.eq(link.id), users::manager_name_pending.eq(link.pending_name)))
                    .execute(conn)?;
            }
        }
    }
    Ok(())
}

fn unique_user_name(error: diesel::result::Error, resource: &Stored) -> Error {
    match error {
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _) => {
            Error::Uniqueness(format!(
                "userName '{}' is already taken in this directory (userName is compared case-insensitively)",
                text(resource, "userName").unwrap_or_default()
            ))
        }
        other => other.into(),
    }
}

/// Creates a user. A user created without `active` is active.
pub fn insert(
    conn: &mut DbConn,
    registry: &Registry,
    directory: &DirectoryId,
    actor: &Actor,
    resource: Stored,
) -> Result<UserRecord> {
    let new = NewUser::new(UserId::generate(), resource, None);
    let manager_id = insert_many(conn, registry, directory, actor, std::slice::from_ref(&new))?
        .pop()
        .ok_or_else(|| Error::Internal("a created user went missing".into()))?;
    let NewUser { id, resource, created_at, .. } = new;
    let meta = Meta { id: id.0, created_at, modified_at: created_at, version: 1 };
    let mut created = [UserRecord { meta, resource, groups: Vec::new(), manager_id, manager_name: None }];
    attach_manager_names(conn, &mut created)?;
    let [created] = created;
    Ok(created)
}

/// A user to create with [`insert_many`].
#[derive(Debug, Clone)]
pub struct NewUser {
    id: UserId,
    resource: Stored,
    source: Option<(String, String)>,
    created_at: i64,
}

impl NewUser {
    /// `id` is chosen by the caller: an importer knows a user's id before it writes it, so that
    /// reports can name their manager whatever order they arrive in. `source` is the connection
    /// that imports it and the user's id there (`None` for SCIM push). A user created without
    /// `active` is active.
    pub fn new(id: UserId, mut resource: Stored, source: Option<(String, String)>) -> NewUser {
        resource.entry("active").or_insert(Value::Bool(true));
        NewUser { id, resource, source, created_at: now_millis() }
    }

    /// Its id in its source, if imported.
    pub fn source_id(&self) -> Option<&str> {
        self.source.as_ref().map(|(_, id)| id.as_str())
    }
}

/// Users inserted in one statement at most: the statement is the batch's first write, so a
/// userName taken by any of them fails the whole batch and writes nothing (see
/// `sync_runs::import_users`). 17 bound values a row stay below SQLite's limit of 32,766.
pub const MAX_NEW_USERS: usize = 1000;

/// Creates users, a batch at a time: one statement for their rows, one per 6,000 value rows, one
/// for their audit entries, and a few to link managers. Returns the user each one's manager
/// resolved to. A userName already taken fails the batch with `Error::Uniqueness`.
pub fn insert_many(
    conn: &mut DbConn,
    registry: &Registry,
    directory: &DirectoryId,
    actor: &Actor,
    new: &[NewUser],
) -> Result<Vec<Option<String>>> {
    if new.len() > MAX_NEW_USERS {
        return Err(Error::Internal(format!("{} users in one insert; at most {MAX_NEW_USERS}", new.len())));
    }
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let batch: Vec<(&str, &Stored)> = new.iter().map(|u| (u.id.as_str(), &u.resource)).collect();
    let links = resolve_managers(conn, directory, &batch, &batch)?;
    // A link to a user of the same batch is set once the batch is in: SQLite checks the foreign
    // key row by row, and the manager's row may come later in the statement (or be its report's).
    let batch_ids: std::collections::HashSet<&str> = batch.iter().map(|(id, _)| *id).collect();
    let mut rows = Vec::with_capacity(new.len());
    let mut links_within = Vec::new();
    for (user, link) in new.iter().zip(&links) {
        let (id, created_at) = (user.id.0.clone(), user.created_at);
        let meta = Meta { id, created_at, modified_at: created_at, version: 1 };
        let (source_connection, source_id) = user.source.clone().unzip();
        let mut link = link.clone();
        if let Some(manager) = link.id.take_if(|manager| batch_ids.contains(manager.as_str())) {
            links_within.push((user.id.as_str(), manager));
        }
        rows.push(NewUserRow {
            row: row_for(directory, &meta, &user.resource, link)?,
            source_connection,
            source_id,
        });
    }
    let statement = diesel::insert_into(users::table).values(&rows);
    let inserted = match conn {
        DbConn::Sqlite(c) => statement.execute(c),
        DbConn::Postgres(c) => statement.execute(c),
    };
    inserted.map_err(|e| match new {
        [one] => unique_user_name(e, &one.resource),
        _ => match e {
            diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _) => {
                Error::Uniqueness("a userName of the batch is already taken in this directory".into())
            }
            other => other.into(),
        },
    })?;
    for (report, manager) in links_within {
        diesel::update(users::table.find(report)).set(users::manager_id.eq(manager)).execute(conn)?;
    }
    let entries: Vec<(&str, Vec<index::Entry>)> =
        batch.iter().map(|(id, resource)| (*id, index::entries(&registry.user, resource))).collect();
    values::insert(
        conn,
        directory,
        entries.iter().flat_map(|(id, list)| list.iter().map(move |e| (*id, e))),
    )?;
    relink_reports(conn, directory, &batch)?;
    let changes: Vec<audit::Change<'_>> = batch
        .iter()
        .map(|(id, resource)| {
            let attributes: Vec<&String> = resource.keys().collect();
            user_change(directory, id, "create", json!({ "attributes": attributes }))
        })
        .collect();
    audit::record_many(conn, actor, changes)?;
    Ok(links.into_iter().map(|link| link.id).collect())
}
/// A live user's row, without what is derived from other tables (groups, manager name).
fn find_live_row(conn: &mut DbConn, directory: &DirectoryId, id: &str) -> Result<Option<UserRow>> {
    Ok(users::table
        .filter(users::directory_id.eq(&directory.0))
        .filter(users::id.eq(id))
        .filter(users::deprovisioned_at.is_null())
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn find(conn: &mut DbConn, directory: &DirectoryId, id: &str) -> Result<Option<UserRecord>> {
    let mut found: Vec<UserRecord> =
        find_live_row(conn, directory, id)?.map(record).transpose()?.into_iter().collect();
    attach_groups(conn, &mut found)?;
    Ok(found.pop())
}

/// Another directory's user is reported exactly like a missing one.
pub fn get(conn: &mut DbConn, directory: &DirectoryId, id: &str) -> Result<UserRecord> {
    find(conn, directory, id)?.ok_or_else(|| not_found(id))
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no User with id '{id}' in this directory"))
}

/// Replaces the stored resource with `change(current)`. Bumps the version only when the
/// resource really changes; a no-op write leaves `meta` as it was.
pub fn modify(
    conn: &mut DbConn,
    registry: &Registry,
    directory: &DirectoryId,
    actor: &Actor,
    id: &str,
    if_match: Option<&str>,
    change: impl FnOnce(&Stored) -> Result<Stored>,
) -> Result<UserRecord> {
    let current = get(conn, directory, id)?;
    check_version(&current.meta, if_match)?;
    check_owner(conn, actor, id)?;
    let resource = change(&current.resource)?;
    if resource == current.resource {
        return Ok(current);
    }
    let meta = Meta {
        modified_at: now_millis().max(current.meta.modified_at),
        version: current.meta.version + 1,
        ..current.meta
    };
    let manager = resolve_manager(conn, directory, id, &resource)?;
    let manager_id = manager.id.clone();
    let row = row_for(directory, &meta, &resource, manager)?;
    diesel::update(users::table.find(id))
        .set(&row)
        .execute(conn)
        .map_err(|e| unique_user_name(e, &resource))?;
    values::rewrite(conn, directory, id, index::entries(&registry.user, &resource))?;
    relink_reports(conn, directory, &[(id, &resource)])?;
    let operation = match (current.resource.get("active"), resource.get("active")) {
        (Some(Value::Bool(true)), Some(Value::Bool(false))) => "deactivate",
        (Some(Value::Bool(false)), Some(Value::Bool(true))) => "reactivate",
        _ => "update",
    };
    let details = json!({ "attributes": changed_attributes(&current.resource, &resource) });
    audit::record(conn, actor, user_change(directory, id, operation, details))?;
    let mut changed = [UserRecord { meta, resource, groups: current.groups, manager_id, manager_name: None }];
    attach_manager_names(conn, &mut changed)?;
    let [changed] = changed;
    Ok(changed)
}

/// PUT: full replacement of the client's attributes. `active` omitted keeps the current value,
/// so a PUT that forgets it never deactivates anyone by accident.
pub fn replace(
    conn: &mut DbConn,
    registry: &Registry,
    directory: &DirectoryId,
    actor: &Actor,
    id: &str,
    if_match: Option<&str>,
    mut replacement: Stored,
) -> Result<UserRecord> {
    modify(conn, registry, directory, actor, id, if_match, move |current| {
        if !replacement.contains_key("active") {
            replacement.insert("active".into(), current.get("active").cloned().unwrap_or(Value::Bool(true)));
        }
        Ok(replacement)
    })
}

/// SCIM DELETE, as the directory's deletion policy says: remove the row, or deprovision the
/// user (gone for SCIM, kept for lookup and audit). Either way the user leaves its groups and
/// the reports it managed lose the link; nothing the clients sent about anyone else changes.
pub fn delete(
    conn: &mut DbConn,
    directory: &DirectoryId,
    actor: &Actor,
    id: &str,
    if_match: Option<&str>,
) -> Result<()> {
    // The row alone: a deleted user's groups and manager are not worth reading.
    let current = record(find_live_row(conn, directory, id)?.ok_or_else(|| not_found(id))?)?;
    check_version(&current.meta, if_match)?;
    check_owner(conn, actor, id)?;
    let policy = directories::deletion_policy(conn, directory)?;
    let operation = match policy {
        DeletionPolicy::Delete => "delete",
        DeletionPolicy::Deactivate => "deprovision",
    };
    audit::record(conn, actor, user_change(directory, id, operation, json!({})))?;
    match policy {
        DeletionPolicy::Delete => {
            diesel::delete(user_values::table.filter(user_values::user_id.eq(id))).execute(conn)?;
            diesel::delete(
                users::table.filter(users::directory_id.eq(&directory.0)).filter(users::id.eq(id)),
            )
            .execute(conn)?;
        }
        DeletionPolicy::Deactivate => {
            let now = now_millis().max(current.meta.modified_at);
            diesel::update(users::table.find(id))
                .set((
                    users::deprovisioned_at.eq(Some(now)),
                    users::modified_at.eq(now),
                    users::version.eq(current.meta.version + 1),
                ))
                .execute(conn)?;
            diesel::delete(group_members::table.filter(group_members::user_id.eq(id))).execute(conn)?;
            // Its reports lose their link; a newcomer of their manager's name may take it.
            let manager_name = user_values::table
                .filter(user_values::user_id.eq(users::id))
                .filter(user_values::attr_id.eq_any(values::numbered(directory, MANAGER_NAME_KEY)))
                .select(user_values::value)
                .limit(1)
                .single_value();
            diesel::update(users::table.filter(users::manager_id.eq(id)))
                .set((users::manager_id.eq(None::<String>), users::manager_name_pending.eq(manager_name)))
                .execute(conn)?;
        }
    }
    Ok(())
}

/// Rule 7 of the pull-sync contract: a user imported by a connection is that connection's to
/// change. SCIM push gets a 409 that names the owner; another connection is refused alike.
fn check_owner(conn: &mut DbConn, actor: &Actor, id: &str) -> Result<()> {
    let owner: Option<String> = users::table.find(id).select(users::source_connection).first(conn)?;
    super::connections::check_owner(conn, actor, owner, "user")
}

fn user_change<'a>(
    directory: &'a DirectoryId,
    id: &'a str,
    operation: &'static str,
    details: Value,
) -> audit::Change<'a> {
    audit::Change {
        directory: Some(directory),
        resource_type: ResourceType::User,
        resource_id: id,
        operation,
        details,
    }
}

/// The stored resources of the live users among `ids`, by id: one query per 500 ids, without
/// the derived groups and manager name (an importer compares what it would store).
pub fn stored_resources(
    conn: &mut DbConn,
    directory: &DirectoryId,
    ids: &[&str],
) -> Result<HashMap<String, Stored>> {
    let mut found = HashMap::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<(String, String)> = users::table
            .filter(users::directory_id.eq(&directory.0))
            .filter(users::id.eq_any(chunk))
            .filter(users::deprovisioned_at.is_null())
            .select((users::id, users::data))
            .load(conn)?;
        for (id, data) in rows {
            let resource = parse_stored("User", &id, &data)?;
            found.insert(id, resource);
        }
    }
    Ok(found)
}

/// A user by id whether live or deprovisioned, with when it was deprovisioned (for directory
/// lookup and audit; SCIM never sees deprovisioned users).
pub fn find_any(
    conn: &mut DbConn,
    directory: &DirectoryId,
    id: &str,
) -> Result<Option<(UserRecord, Option<i64>)>> {
    let row: Option<UserRow> = users::table
        .filter(users::directory_id.eq(&directory.0))
        .filter(users::id.eq(id))
        .select(UserRow::as_select())
        .first(conn)
        .optional()?;
    match row {
        Some(row) => {
            let deprovisioned_at = row.deprovisioned_at;
            Ok(Some((record(row)?, deprovisioned_at)))
        }
        None => Ok(None),
    }
}

/// `FROM users WHERE users.directory_id = ? AND users.deprovisioned_at IS NULL [AND (<filter>)]`.
fn from_where(sql: &mut SqlFragment, directory: &DirectoryId, filter: &Option<SqlFragment>) {
    // Deprovisioned users are invisible to SCIM; this term also selects the live-user indexes.
    sql.push_sql(" FROM users WHERE users.directory_id = ");
    sql.push(SqlPart::Text(directory.0.clone()));
    sql.push_sql(" AND users.deprovisioned_at IS NULL");
    if let Some(fragment) = filter {
        sql.push_sql(" AND (");
        sql.append(fragment.clone());
        sql.push_sql(")");
    }
}

fn column_sql(column: Column) -> &'static str {
    match column {
        Column::Id => "users.id",
        Column::ExternalId => "users.external_id",
        Column::UserName => "users.user_name_folded",
        Column::DisplayName => "users.display_name_folded",
        Column::Active => "users.active",
        Column::Created => "users.created_at",
        Column::LastModified => "users.modified_at",
    }
}

fn sort_expression(sql: &mut SqlFragment, directory: &DirectoryId, key: &SortKey) {
    match key {
        SortKey::Column(column) => sql.push_sql(column_sql(*column)),
        SortKey::Value(attr) => {
            sql.push_sql(
                "(SELECT MIN(sv.value) FROM user_values sv WHERE sv.user_id = users.id AND sv.attr_id = ",
            );
            filter_sql::attr_number(sql, &directory.0, attr);
            sql.push_sql(")");
        }
    }
}

/// Counts the matches and loads one page, ordered by the sort key, then by id (creation order),
/// so pages are stable. Unassigned values sort last ascending and first descending.
/// `generation` is `cache`'s generation of the directory, read before this transaction began.
pub fn list(
    conn: &mut DbConn,
    directory: &DirectoryId,
    query: &UserQuery,
    cache: &ListCache,
    generation: u64,
) -> Result<(u64, Vec<UserRecord>)> {
    let backend = conn.backend();
    // What identifies "the same list" for remembered totals and page ends.
    let list_key = match &query.filter {
        Some(fragment) => format!("{:?}", fragment.parts),
        None => String::new(),
    };
    let cursor = match (&query.sort, query.offset) {
        (None, offset) if offset > 0 => cache.cursor(&directory.0, &list_key, offset, generation),
        _ => None,
    };
    let rows = if query.limit == 0 {
        Vec::new()
    } else if query.offset == 0 || cursor.is_some() {
        // The first page (and every lookup such as `userName eq`) reads its rows directly, and
        // so does the page after one this process served: it continues after that page's last id.
        load_page(conn, backend, directory, query, "users.*", cursor.as_deref())?
    } else {
        // Other pages find their ids first: without a sort key this walks only the
        // (directory_id, id) index, so the skipped entries' rows are never read.
        let ids: Vec<String> = load_page::<IdRow>(conn, backend, directory, query, "users.id", None)?
            .into_iter()
            .map(|row| row.id)
            .collect();
        let mut rows: Vec<UserRow> =
            users::table.filter(users::id.eq_any(&ids)).select(UserRow::as_select()).load(conn)?;
        let position: std::collections::HashMap<&str, usize> =
            ids.iter().enumerate().map(|(n, id)| (id.as_str(), n)).collect();
        rows.sort_by_key(|row| position.get(row.id.as_str()).copied().unwrap_or(usize::MAX));
        rows
    };
    let returned = u64::try_from(rows.len()).unwrap_or(u64::MAX);
    // Only a full page can have a next page to continue.
    if query.sort.is_none() && returned == query.limit {
        if let Some(last) = rows.last() {
            cache.remember_cursor(
                &directory.0,
                &list_key,
                query.offset + returned,
                generation,
                last.id.clone(),
            );
        }
    }
    // A page that is not full (and not past the end) already tells the total.
    let page_tells_total = returned < query.limit && (returned > 0 || query.offset == 0);
    let total = if page_tells_total {
        query.offset + returned
    } else if let Some(total) = cache.total(&directory.0, &list_key, generation) {
        total
    } else {
        let mut count = SqlFragment::new(backend);
        count.push_sql("SELECT COUNT(*) AS n");
        from_where(&mut count, directory, &query.filter);
        let counted: CountRow = statement(count, query).get_result(conn)?;
        let total = u64::try_from(counted.n).unwrap_or(0);
        cache.remember_total(&directory.0, &list_key, generation, total);
        total
    };
    let mut records = rows.into_iter().map(record).collect::<Result<Vec<_>>>()?;
    attach_groups(conn, &mut records)?;
    Ok((total, records))
}

/// `SELECT <columns>` of one page in the requested order, then by id (creation order).
fn load_page<T>(
    conn: &mut DbConn,
    backend: Backend,
    directory: &DirectoryId,
    query: &UserQuery,
    columns: &str,
    after: Option<&str>,
) -> Result<Vec<T>>
where
    T: diesel::QueryableByName<<DbConn as diesel::Connection>::Backend> + 'static,
{
    let page = page_sql(backend, directory, query, columns, after);
    Ok(statement(page, query).load(conn)?)
}

fn page_sql(
    backend: Backend,
    directory: &DirectoryId,
    query: &UserQuery,
    columns: &str,
    after: Option<&str>,
) -> SqlFragment {
    let mut page = SqlFragment::new(backend);
    page.push_sql("SELECT ");
    page.push_sql(columns);
    from_where(&mut page, directory, &query.filter);
    if let Some(after) = after {
        page.push_sql(" AND users.id > ");
        page.push(SqlPart::Text(after.to_string()));
    }
    page.push_sql(" ORDER BY ");
    if let Some((key, order)) = &query.sort {
        let direction = match order {
            SortOrder::Ascending => " ASC, ",
            SortOrder::Descending => " DESC, ",
        };
        page.push_sql("(CASE WHEN ");
        sort_expression(&mut page, directory, key);
        page.push_sql(" IS NULL THEN 1 ELSE 0 END)");
        page.push_sql(direction);
        sort_expression(&mut page, directory, key);
        page.push_sql(direction);
    }
    // SQLite, without table statistics, walks the directory's live users in id order (index
    // users_directory_live) rather than find `userName eq` by its own index and sort the one row:
    // at 100k users a lookup took 35-50 ms instead of 1. `+users.id` is not a column, so no
    // index can give that order and the filter's index is used. PostgreSQL has statistics.
    let by_id = match (backend, query.column_equality) {
        (Backend::Sqlite, true) => "+users.id ASC LIMIT ",
        _ => "users.id ASC LIMIT ",
    };
    page.push_sql(by_id);
    page.push(SqlPart::BigInt(i64::try_from(query.limit).unwrap_or(i64::MAX)));
    page.push_sql(" OFFSET ");
    let offset = if after.is_some() { 0 } else { query.offset };
    page.push(SqlPart::BigInt(i64::try_from(offset).unwrap_or(i64::MAX)));
    page
}

/// A directory's own `max_page_size` lowers the server's.
fn capped(mut query: UserQuery, cap: Option<u64>) -> UserQuery {
    if let Some(cap) = cap {
        query.limit = query.limit.min(cap);
    }
    query
}

fn statement(fragment: SqlFragment, query: &UserQuery) -> Statement {
    if query.bounded_shape {
        Statement::cached(fragment)
    } else {
        Statement::once(fragment)
    }
}

impl Store {
    /// A write to a directory's users; once committed, what lists remembered of it is stale.
    async fn write_users<T, F>(&self, principal: Principal, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &Registry, &DirectoryId) -> Result<T> + Send + 'static,
    {
        let directory = principal.directory_id.clone();
        let written = self.write_as(principal, work).await?;
        self.list_cache.changed(&directory.0);
        Ok(written)
    }

    pub async fn create_user(&self, principal: Principal, resource: Stored) -> Result<UserRecord> {
        let actor = Actor::Key(principal.key_id.clone());
        self.write_users(principal, move |conn, registry, directory| {
            insert(conn, registry, directory, &actor, resource)
        })
        .await
    }

    pub async fn get_user(&self, principal: Principal, id: String) -> Result<UserRecord> {
        self.read_as(principal, move |conn, _, directory| get(conn, directory, &id)).await
    }

    pub async fn replace_user(
        &self,
        principal: Principal,
        id: String,
        if_match: Option<String>,
        replacement: Stored,
    ) -> Result<UserRecord> {
        let actor = Actor::Key(principal.key_id.clone());
        self.write_users(principal, move |conn, registry, directory| {
            replace(conn, registry, directory, &actor, &id, if_match.as_deref(), replacement)
        })
        .await
    }

    /// Applies `change` to the current resource inside the transaction; any error leaves it as it was.
    pub async fn patch_user<F>(
        &self,
        principal: Principal,
        id: String,
        if_match: Option<String>,
        change: F,
    ) -> Result<UserRecord>
    where
        F: FnOnce(&Stored, &Registry) -> Result<Stored> + Send + 'static,
    {
        let actor = Actor::Key(principal.key_id.clone());
        self.write_users(principal, move |conn, registry, directory| {
            modify(conn, registry, directory, &actor, &id, if_match.as_deref(), |current| {
                change(current, registry)
            })
        })
        .await
    }

    pub async fn delete_user(
        &self,
        principal: Principal,
        id: String,
        if_match: Option<String>,
    ) -> Result<()> {
        let actor = Actor::Key(principal.key_id.clone());
        self.write_users(principal, move |conn, _, directory| {
            delete(conn, directory, &actor, &id, if_match.as_deref())
        })
        .await
    }

    pub async fn list_users(&self, principal: Principal, query: UserQuery) -> Result<(u64, Vec<UserRecord>)> {
        let cache = self.list_cache.clone();
        // Read before the transaction starts (see `list_cache`).
        let generation = cache.generation(&principal.directory_id.0);
        self.read_as(principal, move |conn, _, directory| {
            let query = capped(query, directories::page_cap(conn, directory)?);
            list(conn, directory, &query, &cache, generation)
        })
        .await
    }
}

impl Store {
    /// A list or search request: the filter is checked against the schema and compiled to SQL,
    /// `sortBy` resolved to a column or value key, then one page is read.
    pub async fn search_users(
        &self,
        principal: Principal,
        request: ListRequest,
    ) -> Result<(u64, Vec<UserRecord>)> {
        let schema = &self.registry().user;
        let (filter, bounded_shape, column_equality) = match &request.filter {
            Some(text) => {
                let parsed = filter::parse(text, schema)?;
                let sql = filter_sql::compile(&parsed, &principal.directory_id.0, self.backend());
                (Some(sql), filter_sql::is_bounded_shape(&parsed), filter_sql::is_column_equality(&parsed))
            }
            None => (None, true, false),
        };
        let sort = match &request.sort_by {
            Some(name) => Some((sort_key(schema, name)?, request.sort_order.unwrap_or(SortOrder::Ascending))),
            None => None,
        };
        let query = UserQuery {
            filter,
            sort,
            offset: request.start_index.saturating_sub(1),
            limit: request.count,
            bounded_shape,
            column_equality,
        };
        self.list_users(principal, query).await
    }
}

/// `sortBy` names an attribute like a filter does; it is resolved the same way.
fn sort_key(schema: &ResourceSchema, name: &str) -> Result<SortKey> {
    let unknown = || {
        Error::InvalidValue(format!(
            "sortBy '{name}' is not a sortable attribute of {}",
            schema.kind.as_str()
        ))
    };
    // A complex attribute sorts by its `value` (emails → emails.value), like a filter compares.
    let attr = path::resolve_name(schema, name).ok().and_then(|a| a.compared()).ok_or_else(unknown)?;
    Ok(match attr.column() {
        Some(column) => SortKey::Column(column),
        None => SortKey::Value(attr.key().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use diesel::sql_types::Text;
    use diesel::Connection;

    use super::*;
    use crate::store::migrate;

    #[derive(QueryableByName)]
    struct Plan {
        #[diesel(sql_type = Text)]
        detail: String,
    }

    /// How SQLite plans one page of a listing, on a migrated database without table statistics
    /// (scimd never runs ANALYZE).
    fn page_plan(filter: Option<&str>) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.db");
        let mut conn = DbConn::Sqlite(diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap());
        migrate::run_pending(&mut conn).unwrap();
        let registry = Registry::load().unwrap();
        let parsed = filter.map(|text| filter::parse(text, &registry.user).unwrap());
        let query = UserQuery {
            filter: parsed.as_ref().map(|f| filter_sql::compile(f, "d1", Backend::Sqlite)),
            sort: None,
            offset: 0,
            limit: 100,
            bounded_shape: true,
            column_equality: parsed.as_ref().is_some_and(filter_sql::is_column_equality),
        };
        let mut sql = SqlFragment::new(Backend::Sqlite);
        sql.push_sql("EXPLAIN QUERY PLAN ");
        sql.append(page_sql(Backend::Sqlite, &DirectoryId("d1".into()), &query, "users.id AS id", None));
        Statement::once(sql).load::<Plan>(&mut conn).unwrap().into_iter().map(|p| p.detail).collect()
    }

    #[test]
    fn lookups_by_an_indexed_column_probe_its_index_instead_of_walking_the_directory() {
        for (filter, index) in [
            (r#"userName eq "a""#, "USING INDEX users_directory_user_name"),
            (r#"externalId eq "a""#, "USING INDEX users_directory_external_id"),
            (r#"displayName eq "a""#, "USING INDEX users_directory_display_name"),
        ] {
            let plan = page_plan(Some(filter));
            assert!(plan.iter().any(|step| step.contains(index)), "{filter}: {plan:?}");
        }
        // A listing without a filter still walks the live users in id order, without sorting.
        let plan = page_plan(None);
        assert!(plan.iter().any(|step| step.contains("users_directory_live")), "{plan:?}");
        assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "{plan:?}");
    }
}
