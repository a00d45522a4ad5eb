//! Directories (tenants).

use diesel::prelude::*;
use serde_json::{json, Map, Value};

use super::audit::{self, Actor, ResourceType};
use super::rows::DirectoryRow;
use super::schema::{directories, groups, users};
use super::{now_millis, DbConn};
use crate::error::{Error, Result};
use crate::ids::DirectoryId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    pub id: DirectoryId,
    pub slug: String,
    pub name: String,
    pub created_at: i64,
    pub deletion: DeletionPolicy,
    /// Largest SCIM page this directory serves; `None`: the server's `scim.max_page_size`.
    pub max_page_size: Option<u32>,
    /// Whether the people lookup shows deactivated and deprovisioned people, marked as such
    /// (the default), or hides them from its pages and search.
    pub show_deactivated: bool,
}

impl From<DirectoryRow> for Directory {
    fn from(row: DirectoryRow) -> Self {
        Directory {
            id: DirectoryId(row.id),
            slug: row.slug,
            name: row.name,
            created_at: row.created_at,
            // Only values written through DeletionPolicy are stored; anything else keeps people.
            deletion: DeletionPolicy::parse(&row.deletion).unwrap_or_default(),
            max_page_size: row.max_page_size.and_then(|n| u32::try_from(n).ok()),
            show_deactivated: row.lookup_show_deactivated,
        }
    }
}

/// What a SCIM `DELETE /Users/{id}` does in a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// The user is deprovisioned: gone for SCIM (404, userName free again), but the record, its
    /// contact data and history stay for directory lookup and audit.
    #[default]
    Deactivate,
    /// The row is removed.
    Delete,
}

impl DeletionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionPolicy::Deactivate => "deactivate",
            DeletionPolicy::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Result<DeletionPolicy> {
        match text {
            "deactivate" => Ok(DeletionPolicy::Deactivate),
            "delete" => Ok(DeletionPolicy::Delete),
            other => Err(Error::InvalidValue(format!(
                "deletion policy '{other}' is not known: use 'deactivate' (keep deleted users as \
                 deprovisioned) or 'delete' (remove them)"
            ))),
        }
    }
}

fn validate_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::InvalidValue("a directory name cannot be empty".into()));
    }
    Ok(())
}

/// Slugs appear in URLs and CLI arguments: lower-case letters, digits and inner dashes.
pub fn validate_slug(slug: &str) -> Result<()> {
    let valid = !slug.is_empty()
        && slug.len() <= 63
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidValue(format!(
            "directory slug '{slug}' is not valid: use 1-63 lower-case letters, digits and inner dashes, e.g. 'acme-corp'"
        )))
    }
}

/// Settings a directory can be created or configured with; `None` leaves a setting as it is
/// (on creation: its default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub slug: Option<String>,
    pub name: Option<String>,
    pub deletion: Option<DeletionPolicy>,
    /// `Some(None)` clears the cap.
    pub max_page_size: Option<Option<u32>>,
    /// The people lookup's `show_deactivated`.
    pub show_deactivated: Option<bool>,
}

/// The largest `max_page_size` a directory may set: a page is built in memory.
pub const PAGE_SIZE_LIMIT: u32 = 10_000;

fn check_page_size(size: Option<u32>) -> Result<Option<i32>> {
    match size {
        None => Ok(None),
        Some(n) if (1..=PAGE_SIZE_LIMIT).contains(&n) => Ok(i32::try_from(n).ok()),
        Some(n) => Err(Error::InvalidValue(format!(
            "max_page_size {n} is out of range: use 1 to {PAGE_SIZE_LIMIT}, or null for the server's default"
        ))),
    }
}

fn unique_slug(error: diesel::result::Error, slug: &str) -> Error {
    match error {
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _) => {
            Error::Uniqueness(format!("a directory with slug '{slug}' already exists"))
        }
        other => other.into(),
    }
}

/// The settings as audit details: names and values (none of them is secret).
fn settings_details(settings: &Settings) -> Value {
    let mut details = Map::new();
    if let Some(slug) = &settings.slug {
        details.insert("slug".into(), json!(slug));
    }
    if let Some(name) = &settings.name {
        details.insert("name".into(), json!(name));
    }
    if let Some(deletion) = settings.deletion {
        details.insert("deletion".into(), json!(deletion.as_str()));
    }
    if let Some(size) = settings.max_page_size {
        details.insert("max_page_size".into(), json!(size));
    }
    if let Some(show) = settings.show_deactivated {
        details.insert("show_deactivated".into(), json!(show));
    }
    Value::Object(details)
}

fn directory_change<'a>(
    directory: &'a DirectoryId,
    operation: &'static str,
    details: Value,
) -> audit::Change<'a> {
    audit::Change {
        directory: Some(directory),
        resource_type: ResourceType::Directory,
        resource_id: directory.as_str(),
        operation,
        details,
    }
}

/// Creates a directory. The slug is required; the name defaults to it.
pub fn insert(conn: &mut DbConn, actor: &Actor, settings: &Settings) -> Result<Directory> {
    let slug = settings.slug.clone().unwrap_or_default();
    validate_slug(&slug)?;
    if let Some(name) = &settings.name {
        validate_name(name)?;
    }
    let row = DirectoryRow {
        id: DirectoryId::generate().0,
        name: settings.name.clone().unwrap_or_else(|| slug.clone()),
        slug: slug.clone(),
        created_at: now_millis(),
        deletion: settings.deletion.unwrap_or_default().as_str().to_string(),
        max_page_size: check_page_size(settings.max_page_size.flatten())?,
        lookup_show_deactivated: settings.show_deactivated.unwrap_or(true),
    };
    diesel::insert_into(directories::table).values(&row).execute(conn).map_err(|e| unique_slug(e, &slug))?;
    let created = Directory::from(row);
    audit::record(conn, actor, directory_change(&created.id, "create", settings_details(settings)))?;
    Ok(created)
}

/// Creates a directory with only a slug and a name (the CLI's and the tests' shorthand).
pub fn create(conn: &mut DbConn, actor: &Actor, slug: &str, name: &str) -> Result<Directory> {
    let settings = Settings { slug: Some(slug.into()), name: Some(name.into()), ..Settings::default() };
    insert(conn, actor, &settings)
}

pub fn find_by_slug(conn: &mut DbConn, slug: &str) -> Result<Option<Directory>> {
    Ok(directories::table
        .filter(directories::slug.eq(slug))
        .select(DirectoryRow::as_select())
        .first(conn)
        .optional()?
        .map(Directory::from))
}

pub fn get_by_slug(conn: &mut DbConn, slug: &str) -> Result<Directory> {
    find_by_slug(conn, slug)?.ok_or_else(|| Error::NotFound(format!("no directory with slug '{slug}'")))
}

/// Renames and reconfigures a directory; settings left `None` keep their value.
pub fn configure(conn: &mut DbConn, actor: &Actor, slug: &str, settings: &Settings) -> Result<Directory> {
    let current = get_by_slug(conn, slug)?;
    if let Some(new_slug) = &settings.slug {
        validate_slug(new_slug)?;
    }
    if let Some(name) = &settings.name {
        validate_name(name)?;
    }
    let max_page_size = match settings.max_page_size {
        Some(size) => check_page_size(size)?,
        None => current.max_page_size.and_then(|n| i32::try_from(n).ok()),
    };
    let new_slug = settings.slug.clone().unwrap_or(current.slug.clone());
    diesel::update(directories::table.find(&current.id.0))
        .set((
            directories::slug.eq(&new_slug),
            directories::name.eq(settings.name.clone().unwrap_or(current.name.clone())),
            directories::deletion.eq(settings.deletion.unwrap_or(current.deletion).as_str()),
            directories::max_page_size.eq(max_page_size),
            directories::lookup_show_deactivated
                .eq(settings.show_deactivated.unwrap_or(current.show_deactivated)),
        ))
        .execute(conn)
        .map_err(|e| unique_slug(e, &new_slug))?;
    audit::record(conn, actor, directory_change(&current.id, "configure", settings_details(settings)))?;
    get_by_slug(conn, &new_slug)
}

/// What a directory holds, to tell an admin what a purge would remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contents {
    pub users: i64,
    pub groups: i64,
}

pub fn contents(conn: &mut DbConn, directory: &DirectoryId) -> Result<Contents> {
    let users = users::table.filter(users::directory_id.eq(&directory.0)).count().get_result(conn)?;
    let groups = groups::table.filter(groups::directory_id.eq(&directory.0)).count().get_result(conn)?;
    Ok(Contents { users, groups })
}

/// Deletes a directory with its keys and settings. One that still holds users or groups is
/// deleted only with `purge`, and then they go too. The audit log keeps its record.
pub fn delete(conn: &mut DbConn, actor: &Actor, slug: &str, purge: bool) -> Result<Contents> {
    let directory = get_by_slug(conn, slug)?;
    let held = contents(conn, &directory.id)?;
    if !purge && (held.users > 0 || held.groups > 0) {
        return Err(Error::Conflict(format!(
            "directory '{slug}' still holds {} user(s) and {} group(s); delete it with ?purge=true \
             (CLI: --purge) to remove them too",
            held.users, held.groups
        )));
    }
    let details = json!({ "slug": slug, "purged_users": held.users, "purged_groups": held.groups });
    audit::record(conn, actor, directory_change(&directory.id, "delete", details))?;
    diesel::delete(directories::table.find(&directory.id.0)).execute(conn)?;
    Ok(held)
}

/// The deletion policy of a directory by id.
pub fn deletion_policy(conn: &mut DbConn, directory: &DirectoryId) -> Result<DeletionPolicy> {
    let text: String = directories::table.find(&directory.0).select(directories::deletion).first(conn)?;
    DeletionPolicy::parse(&text)
}

/// Directories in slug order: all of them, or a page after `after` (a slug).
pub fn list(conn: &mut DbConn) -> Result<Vec<Directory>> {
    list_page(conn, None, i64::MAX)
}

pub fn list_page(conn: &mut DbConn, after: Option<&str>, limit: i64) -> Result<Vec<Directory>> {
    let mut query = directories::table.into_boxed();
    if let Some(after) = after {
        query = query.filter(directories::slug.gt(after));
    }
    Ok(query
        .order(directories::slug.asc())
        .limit(limit)
        .select(DirectoryRow::as_select())
        .load(conn)?
        .into_iter()
        .map(Directory::from)
        .collect())
}

pub fn count(conn: &mut DbConn) -> Result<i64> {
    Ok(directories::table.count().get_result(conn)?)
}

impl super::Store {
    pub async fn create_directory(&self, actor: Actor, settings: Settings) -> Result<Directory> {
        self.write(move |conn, _| insert(conn, &actor, &settings)).await
    }

    pub async fn get_directory(&self, slug: String) -> Result<Directory> {
        self.read(move |conn, _| get_by_slug(conn, &slug)).await
    }

    pub async fn list_directories(&self, after: Option<String>, limit: i64) -> Result<Vec<Directory>> {
        self.read(move |conn, _| list_page(conn, after.as_deref(), limit)).await
    }

    pub async fn configure_directory(
        &self,
        actor: Actor,
        slug: String,
        settings: Settings,
    ) -> Result<Directory> {
        self.write(move |conn, _| configure(conn, &actor, &slug, &settings)).await
    }

    pub async fn delete_directory(&self, actor: Actor, slug: String, purge: bool) -> Result<Contents> {
        let deleted = self.write(move |conn, _| delete(conn, &actor, &slug, purge)).await?;
        Ok(deleted)
    }
}

/// The page size a directory allows, when it caps it below the server's.
pub fn page_cap(conn: &mut DbConn, directory: &DirectoryId) -> Result<Option<u64>> {
    let cap: Option<i32> =
        directories::table.find(&directory.0).select(directories::max_page_size).first(conn)?;
    Ok(cap.and_then(|n| u64::try_from(n).ok()))
}
