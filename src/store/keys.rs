//! Directory bearer keys: issued once, stored as a hash, revocable, optionally expiring.

use diesel::prelude::*;

use serde_json::json;

use super::audit::{self, Actor, ResourceType};
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
    /// Why a directory key was refused.
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::Unknown => "the bearer key is not valid",
            Refusal::Revoked => "the bearer key has been revoked; ask an administrator for a new one",
            Refusal::Expired => "the bearer key has expired; ask an administrator for a new one",
        }
    }

    /// Why an admin token was refused.
    pub fn admin_detail(self) -> &'static str {
        match self {
            Refusal::Unknown => "the admin token is not valid",
            Refusal::Revoked => {
                "the admin token has been revoked; issue a new one with 'scimd admin-token issue'"
            }
            Refusal::Expired => "the admin token has expired; issue a new one with 'scimd admin-token issue'",
        }
    }

    /// Whether a token with these dates is refused at `now`.
    pub fn of(revoked_at: Option<i64>, expires_at: Option<i64>, now: i64) -> Option<Refusal> {
        if revoked_at.is_some() {
            Some(Refusal::Revoked)
        } else if expires_at.is_some_and(|at| at <= now) {
            Some(Refusal::Expired)
        } else {
            None
        }
    }
}

pub fn issue(
    conn: &mut DbConn,
    actor: &Actor,
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
    let details = json!({ "name": name, "prefix": row.lookup, "expires_at": expires_at });
    audit::record(conn, actor, key_change(directory_id, &row.id, "issue", details))?;
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

fn key_change<'a>(
    directory_id: &'a DirectoryId,
    key_id: &'a str,
    operation: &'static str,
    details: serde_json::Value,
) -> audit::Change<'a> {
    audit::Change {
        directory: Some(directory_id),
        resource_type: ResourceType::Key,
        resource_id: key_id,
        operation,
        details,
    }
}

pub fn get(conn: &mut DbConn, key_id: &str) -> Result<KeyInfo> {
    let row: KeyRow = directory_keys::table
        .find(key_id)
        .select(KeyRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no key with id '{key_id}'")))?;
    Ok(row.into())
}

/// Revokes a key; revoking an already revoked key keeps the first revocation time.
pub fn revoke(conn: &mut DbConn, actor: &Actor, key_id: &str) -> Result<KeyInfo> {
    let key = get(conn, key_id)?;
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    let now = now_millis();
    diesel::update(directory_keys::table.find(key_id))
        .set(directory_keys::revoked_at.eq(now))
        .execute(conn)?;
    audit::record(
        conn,
        actor,
        key_change(&key.directory_id, key_id, "revoke", json!({ "prefix": key.prefix })),
    )?;
    Ok(KeyInfo { revoked_at: Some(now), ..key })
}

/// Records when keys were last used (see `usage`); never moves a time backwards.
pub fn touch(conn: &mut DbConn, key_id: &str, at: i64) -> Result<()> {
    diesel::update(
        directory_keys::table
            .find(key_id)
            .filter(directory_keys::last_used_at.is_null().or(directory_keys::last_used_at.lt(at))),
    )
    .set(directory_keys::last_used_at.eq(at))
    .execute(conn)?;
    Ok(())
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
    if let Some(refusal) = Refusal::of(row.revoked_at, row.expires_at, now) {
        return Ok(Err(refusal));
    }
    Ok(Ok(Principal { key_id: KeyId(row.id), directory_id: DirectoryId(row.directory_id) }))
}

/// Re-checks, inside a request's own transaction, a key accepted earlier (possibly from
/// [`KnownKeys`]): a revocation or expiry refuses the very next request, on every instance
/// sharing the database, at the cost of one primary-key read instead of a separate round trip.
pub fn confirm(conn: &mut DbConn, principal: &Principal, now: i64) -> Result<()> {
    let state: Option<(Option<i64>, Option<i64>)> = directory_keys::table
        .find(principal.key_id.as_str())
        .select((directory_keys::revoked_at, directory_keys::expires_at))
        .first(conn)
        .optional()?;
    let refused = match state {
        None => Some(Refusal::Unknown),
        Some((revoked_at, expires_at)) => Refusal::of(revoked_at, expires_at, now),
    };
    match refused {
        None => Ok(()),
        Some(refusal) => Err(Error::Unauthorized(refusal.detail().into())),
    }
}

/// Keys this process has verified, by token hash. A key's directory never changes, so a hit
/// spares the hash lookup; whether the key is still valid is [`confirm`]ed by every request.
#[derive(Debug, Default)]
pub struct KnownKeys {
    by_hash: std::sync::Mutex<std::collections::HashMap<String, Principal>>,
}

/// Bounds the memory a flood of distinct valid keys could take; past it the map starts over.
const KNOWN_KEYS_LIMIT: usize = 10_000;

impl KnownKeys {
    fn get(&self, hash: &str) -> Option<Principal> {
        self.by_hash.lock().ok()?.get(hash).cloned()
    }

    fn remember(&self, hash: String, principal: Principal) {
        if let Ok(mut known) = self.by_hash.lock() {
            if known.len() >= KNOWN_KEYS_LIMIT {
                known.clear();
            }
            known.insert(hash, principal);
        }
    }

    /// Drops a key that [`confirm`] refused, so its next use is refused before any work.
    pub fn forget(&self, key_id: &KeyId) {
        if let Ok(mut known) = self.by_hash.lock() {
            known.retain(|_, principal| &principal.key_id != key_id);
        }
    }
}

impl Store {
    /// Resolves a bearer token to its directory: from memory when this process has seen the
    /// key, otherwise from the database. The store methods that act for the principal
    /// [`confirm`] it again in their own transaction.
    pub async fn authenticate(&self, presented: String) -> Result<Result<Principal, Refusal>> {
        let hash = token::hash(&presented);
        if let Some(principal) = self.known_keys.get(&hash) {
            return Ok(Ok(principal));
        }
        let verdict = self.read(move |conn, _| authenticate(conn, &presented, now_millis())).await?;
        if let Ok(principal) = &verdict {
            self.known_keys.remember(hash, principal.clone());
        }
        Ok(verdict)
    }
}

impl Store {
    pub async fn issue_key(
        &self,
        actor: Actor,
        directory_slug: String,
        name: String,
        expires_at: Option<i64>,
    ) -> Result<IssuedKey> {
        self.write(move |conn, _| {
            let directory = super::directories::get_by_slug(conn, &directory_slug)?;
            issue(conn, &actor, &directory.id, &name, expires_at)
        })
        .await
    }

    pub async fn list_keys(&self, directory_slug: String) -> Result<Vec<KeyInfo>> {
        self.read(move |conn, _| {
            let directory = super::directories::get_by_slug(conn, &directory_slug)?;
            list(conn, &directory.id)
        })
        .await
    }

    pub async fn get_key(&self, key_id: String) -> Result<KeyInfo> {
        self.read(move |conn, _| get(conn, &key_id)).await
    }

    pub async fn revoke_key(&self, actor: Actor, key_id: String) -> Result<KeyInfo> {
        let revoked = self.write(move |conn, _| revoke(conn, &actor, &key_id)).await?;
        self.known_keys.forget(&revoked.id);
        Ok(revoked)
    }
}
