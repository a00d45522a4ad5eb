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
}

impl From<DirectoryRow> for Directory {
    fn from(row: DirectoryRow) -> Self {
        Directory { id: DirectoryId(row.id), slug: row.slug, name: row.name, created_at: row.created_at }
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
