//! Directories (tenants).

use diesel::prelude::*;

use super::rows::DirectoryRow;
use super::schema::directories;
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

pub fn insert(conn: &mut DbConn, slug: &str, name: &str) -> Result<Directory> {
    validate_slug(slug)?;
    let row = DirectoryRow {
        id: DirectoryId::generate().0,
        slug: slug.to_string(),
        name: name.to_string(),
        created_at: now_millis(),
        deletion: DeletionPolicy::default().as_str().to_string(),
    };
    diesel::insert_into(directories::table).values(&row).execute(conn).map_err(|e| match e {
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _) => {
            Error::Uniqueness(format!("a directory with slug '{slug}' already exists"))
        }
        other => other.into(),
    })?;
    Ok(row.into())
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

pub fn set_deletion(conn: &mut DbConn, slug: &str, policy: DeletionPolicy) -> Result<Directory> {
    let directory = get_by_slug(conn, slug)?;
    diesel::update(directories::table.find(&directory.id.0))
        .set(directories::deletion.eq(policy.as_str()))
        .execute(conn)?;
    Ok(Directory { deletion: policy, ..directory })
}

/// The deletion policy of a directory by id.
pub fn deletion_policy(conn: &mut DbConn, directory: &DirectoryId) -> Result<DeletionPolicy> {
    let text: String = directories::table.find(&directory.0).select(directories::deletion).first(conn)?;
    DeletionPolicy::parse(&text)
}

pub fn list(conn: &mut DbConn) -> Result<Vec<Directory>> {
    Ok(directories::table
        .order(directories::slug.asc())
        .select(DirectoryRow::as_select())
        .load(conn)?
        .into_iter()
        .map(Directory::from)
        .collect())
}

pub fn count(conn: &mut DbConn) -> Result<i64> {
    Ok(directories::table.count().get_result(conn)?)
}
