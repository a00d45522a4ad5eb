//! Admin tokens for `/admin/v1`: issued at the command line, stored like directory keys (a
//! lookup prefix and a SHA-256), revocable, optionally expiring. Admin traffic is light, so
//! every request checks its token in the database; nothing is remembered between requests.

use diesel::prelude::*;
use serde_json::json;

use super::audit::{self, Actor, ResourceType};
use super::keys::Refusal;
use super::rows::AdminTokenRow;
use super::schema::admin_tokens;
use super::{now_millis, DbConn, Store};
use crate::error::{Error, Result};
use crate::ids::AdminTokenId;
use crate::token::{self, Kind};

/// A token as listed: everything but the secret, which is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTokenInfo {
    pub id: AdminTokenId,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl From<AdminTokenRow> for AdminTokenInfo {
    fn from(row: AdminTokenRow) -> Self {
        AdminTokenInfo {
            id: AdminTokenId(row.id),
            name: row.name,
            prefix: row.lookup,
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            last_used_at: row.last_used_at,
        }
    }
}

#[derive(Debug)]
pub struct IssuedAdminToken {
    pub info: AdminTokenInfo,
    pub token: token::IssuedToken,
}

fn token_change<'a>(id: &'a str, operation: &'static str, details: serde_json::Value) -> audit::Change<'a> {
    audit::Change {
        directory: None,
        resource_type: ResourceType::AdminToken,
        resource_id: id,
        operation,
        details,
    }
}

pub fn issue(
    conn: &mut DbConn,
    actor: &Actor,
    name: &str,
    expires_at: Option<i64>,
) -> Result<IssuedAdminToken> {
    let token = token::generate_kind(Kind::Admin);
    let row = AdminTokenRow {
        id: AdminTokenId::generate().0,
        name: name.to_string(),
        lookup: token.lookup.clone(),
        hash: token.hash.clone(),
        created_at: now_millis(),
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    diesel::insert_into(admin_tokens::table).values(&row).execute(conn)?;
    let details = json!({ "name": name, "prefix": row.lookup, "expires_at": expires_at });
    audit::record(conn, actor, token_change(&row.id, "issue", details))?;
    Ok(IssuedAdminToken { info: row.into(), token })
}

pub fn list(conn: &mut DbConn) -> Result<Vec<AdminTokenInfo>> {
    Ok(admin_tokens::table
        .order(admin_tokens::id.asc())
        .select(AdminTokenRow::as_select())
        .load(conn)?
        .into_iter()
        .map(AdminTokenInfo::from)
        .collect())
}

pub fn revoke(conn: &mut DbConn, actor: &Actor, id: &str) -> Result<AdminTokenInfo> {
    let row: AdminTokenRow = admin_tokens::table
        .find(id)
        .select(AdminTokenRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no admin token with id '{id}'")))?;
    if row.revoked_at.is_some() {
        return Ok(row.into());
    }
    let now = now_millis();
    diesel::update(admin_tokens::table.find(id)).set(admin_tokens::revoked_at.eq(now)).execute(conn)?;
    audit::record(conn, actor, token_change(id, "revoke", json!({ "prefix": row.lookup })))?;
    Ok(AdminTokenInfo { revoked_at: Some(now), ..row.into() })
}

/// Checks a presented admin token against the stored hashes.
pub fn authenticate(conn: &mut DbConn, presented: &str, now: i64) -> Result<Result<AdminTokenId, Refusal>> {
    let Some(lookup) = token::lookup_of_kind(Kind::Admin, presented) else {
        return Ok(Err(Refusal::Unknown));
    };
    let candidates: Vec<AdminTokenRow> = admin_tokens::table
        .filter(admin_tokens::lookup.eq(lookup))
        .select(AdminTokenRow::as_select())
        .load(conn)?;
    let Some(row) = candidates.into_iter().find(|row| token::verify(presented, &row.hash)) else {
        return Ok(Err(Refusal::Unknown));
    };
    if let Some(refusal) = Refusal::of(row.revoked_at, row.expires_at, now) {
        return Ok(Err(refusal));
    }
    Ok(Ok(AdminTokenId(row.id)))
}

/// Records when a token was last used; never moves the time backwards.
pub fn touch(conn: &mut DbConn, id: &str, at: i64) -> Result<()> {
    diesel::update(
        admin_tokens::table
            .find(id)
            .filter(admin_tokens::last_used_at.is_null().or(admin_tokens::last_used_at.lt(at))),
    )
    .set(admin_tokens::last_used_at.eq(at))
    .execute(conn)?;
    Ok(())
}

impl Store {
    pub async fn authenticate_admin(&self, presented: String) -> Result<Result<AdminTokenId, Refusal>> {
        self.read(move |conn, _| authenticate(conn, &presented, now_millis())).await
    }
}
