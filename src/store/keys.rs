//! Directory bearer keys: issued once, stored as a hash, revocable, optionally expiring.

use diesel::prelude::*;

use super::rows::KeyRow;
use super::schema::directory_keys;
use super::{now_millis, DbConn, Store};
use crate::error::{Error, Result};
use crate::ids::{DirectoryId, KeyId};
use crate::token;

/// A key as listed: everything but the secret, which is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: KeyId,
    pub directory_id: DirectoryId,
    pub name: String,
    /// The public start of the token, to recognise it.
    pub prefix: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl From<KeyRow> for KeyInfo {
    fn from(row: KeyRow) -> Self {
        KeyInfo {
            id: KeyId(row.id),
            directory_id: DirectoryId(row.directory_id),
            name: row.name,
            prefix: row.lookup,
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            last_used_at: row.last_used_at,
        }
    }
}

/// A key just issued: the only moment its secret exists outside the client.
#[derive(Debug)]
pub struct IssuedKey {
    pub info: KeyInfo,
    pub token: token::IssuedToken,
}

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: KeyId,
    pub directory_id: DirectoryId,
}

/// Why a presented token was refused; the words are safe to show the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Revoked,
    Expired,
}

impl Refusal {
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::Unknown => "the bearer key is not valid",
            Refusal::Revoked => "the bearer key has been revoked; ask an administrator for a new one",
            Refusal::Expired => "the bearer key has expired; ask an administrator for a new one",
        }
    }
}

pub fn issue(
    conn: &mut DbConn,
    directory_id: &DirectoryId,
    name: &str,
    expires_at: Option<i64>,
) -> Result<IssuedKey> {
    let token = token::generate();
    let row = KeyRow {
        id: KeyId::generate().0,
        directory_id: directory_id.0.clone(),
        name: name.to_string(),
        lookup: token.lookup.clone(),
        hash: token.hash.clone(),
        created_at: now_millis(),
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    diesel::insert_into(directory_keys::table).values(&row).execute(conn)?;
    Ok(IssuedKey { info: row.into(), token })
}

pub fn list(conn: &mut DbConn, directory_id: &DirectoryId) -> Result<Vec<KeyInfo>> {
    Ok(directory_keys::table
        .filter(directory_keys::directory_id.eq(&directory_id.0))
        .order(directory_keys::id.asc())
        .select(KeyRow::as_select())
        .load(conn)?
        .into_iter()
        .map(KeyInfo::from)
        .collect())
}

/// Revokes a key; revoking an already revoked key keeps the first revocation time.
pub fn revoke(conn: &mut DbConn, key_id: &str) -> Result<KeyInfo> {
    let row: KeyRow = directory_keys::table
        .find(key_id)
        .select(KeyRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no key with id '{key_id}'")))?;
    if row.revoked_at.is_none() {
        diesel::update(directory_keys::table.find(key_id))
            .set(directory_keys::revoked_at.eq(now_millis()))
            .execute(conn)?;
    }
    let row: KeyRow = directory_keys::table.find(key_id).select(KeyRow::as_select()).first(conn)?;
    Ok(row.into())
}

/// Checks a presented bearer token against the stored hashes.
pub fn authenticate(conn: &mut DbConn, presented: &str, now: i64) -> Result<Result<Principal, Refusal>> {
    let Some(lookup) = token::lookup_of(presented) else { return Ok(Err(Refusal::Unknown)) };
    let candidates: Vec<KeyRow> = directory_keys::table
        .filter(directory_keys::lookup.eq(lookup))
        .select(KeyRow::as_select())
        .load(conn)?;
    let Some(row) = candidates.into_iter().find(|row| token::verify(presented, &row.hash)) else {
        return Ok(Err(Refusal::Unknown));
    };
    if row.revoked_at.is_some() {
        return Ok(Err(Refusal::Revoked));
    }
    if row.expires_at.is_some_and(|at| at <= now) {
        return Ok(Err(Refusal::Expired));
    }
    Ok(Ok(Principal { key_id: KeyId(row.id), directory_id: DirectoryId(row.directory_id) }))
}

impl Store {
    /// Resolves a bearer token to its directory. Read on every request, so revocation and
    /// expiry take effect on the very next one, on every instance sharing the database.
    pub async fn authenticate(&self, presented: String) -> Result<Result<Principal, Refusal>> {
        self.read(move |conn, _| authenticate(conn, &presented, now_millis())).await
    }
}
