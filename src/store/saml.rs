//! SAML sign-in storage: each directory's IdP settings, the replay cache (assertion ids and
//! answered request ids, shared by all instances), browser sessions and the cookie key.

use diesel::prelude::*;
use rand::Rng;
use serde_json::json;

use super::audit::{self, Actor, Change, ResourceType};
use super::directories::{self, Directory};
use super::schema::{saml_idps, saml_replays, users, web_keys, web_sessions};
use super::{now_millis, DbConn, Store};
use crate::error::{Error, Result};
use crate::ids::{DirectoryId, UserId};
use crate::saml::{IdpSettings, Refusal, VerifiedLogin};
use crate::scim::index::fold;

const COOKIE_KEY: &str = "cookie_hmac";

#[derive(Debug, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = saml_idps)]
struct IdpRow {
    directory_id: String,
    sso_url: String,
    certificate_pem: String,
    idp_entity_id: String,
    user_attribute: String,
    allow_idp_initiated: bool,
    updated_at: i64,
}

impl From<IdpRow> for IdpSettings {
    fn from(row: IdpRow) -> Self {
        IdpSettings {
            sso_url: row.sso_url,
            certificate_pem: row.certificate_pem,
            idp_entity_id: row.idp_entity_id,
            user_attribute: row.user_attribute,
            allow_idp_initiated: row.allow_idp_initiated,
        }
    }
}

/// A directory by slug with its IdP settings (`None` until configured).
pub fn find_idp(conn: &mut DbConn, slug: &str) -> Result<Option<(Directory, Option<IdpSettings>)>> {
    let Some(directory) = directories::find_by_slug(conn, slug)? else { return Ok(None) };
    let row: Option<IdpRow> =
        saml_idps::table.find(&directory.id.0).select(IdpRow::as_select()).first(conn).optional()?;
    Ok(Some((directory, row.map(IdpSettings::from))))
}

/// Sets a directory's IdP (replacing any earlier one) after validating it.
pub fn configure(
    conn: &mut DbConn,
    actor: &Actor,
    slug: &str,
    settings: &IdpSettings,
) -> Result<IdpSettings> {
    settings.validate()?;
    let directory = directories::get_by_slug(conn, slug)?;
    let row = IdpRow {
        directory_id: directory.id.0.clone(),
        sso_url: settings.sso_url.clone(),
        certificate_pem: settings.certificate_pem.clone(),
        idp_entity_id: settings.idp_entity_id.clone(),
        user_attribute: settings.user_attribute.clone(),
        allow_idp_initiated: settings.allow_idp_initiated,
        updated_at: now_millis(),
    };
    diesel::delete(saml_idps::table.find(&directory.id.0)).execute(conn)?;
    diesel::insert_into(saml_idps::table).values(&row).execute(conn)?;
    audit::record(
        conn,
        actor,
        change(
            &directory.id,
            &directory.id.0,
            "configure",
            json!({
                "sso_url": settings.sso_url,
                "idp_entity_id": settings.idp_entity_id,
                "user_attribute": settings.user_attribute,
                "allow_idp_initiated": settings.allow_idp_initiated,
            }),
        ),
    )?;
    Ok(settings.clone())
}

/// Removes a directory's IdP; its people can no longer sign in (sessions end too).
pub fn remove(conn: &mut DbConn, actor: &Actor, slug: &str) -> Result<()> {
    let directory = directories::get_by_slug(conn, slug)?;
    let removed = diesel::delete(saml_idps::table.find(&directory.id.0)).execute(conn)?;
    if removed == 0 {
        return Err(Error::NotFound(format!("directory '{slug}' has no SAML IdP configured")));
    }
    diesel::update(web_sessions::table.filter(web_sessions::directory_id.eq(&directory.id.0)))
        .filter(web_sessions::revoked_at.is_null())
        .set(web_sessions::revoked_at.eq(Some(now_millis())))
        .execute(conn)?;
    audit::record(conn, actor, change(&directory.id, &directory.id.0, "remove", json!({})))
}

/// The audit entry of a sign-in setting or event of `directory`, about `resource_id` (the
/// directory for settings, the user for sign-ins).
fn change<'a>(
    directory: &'a DirectoryId,
    resource_id: &'a str,
    operation: &'static str,
    details: serde_json::Value,
) -> Change<'a> {
    Change { directory: Some(directory), resource_type: ResourceType::Saml, resource_id, operation, details }
}

/// The key that signs cookies, made on first use and shared by every instance.
pub fn cookie_key(conn: &mut DbConn) -> Result<Vec<u8>> {
    let existing: Option<String> =
        web_keys::table.find(COOKIE_KEY).select(web_keys::secret).first(conn).optional()?;
    let secret = match existing {
        Some(secret) => secret,
        None => {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let row = (
                web_keys::name.eq(COOKIE_KEY),
                web_keys::secret.eq(hex::encode(bytes)),
                web_keys::created_at.eq(now_millis()),
            );
            let insert = diesel::insert_into(web_keys::table).values(row).on_conflict_do_nothing();
            match conn {
                DbConn::Sqlite(c) => insert.execute(c)?,
                DbConn::Postgres(c) => insert.execute(c)?,
            };
            // Another instance may have won the race: everyone uses the stored one.
            web_keys::table.find(COOKIE_KEY).select(web_keys::secret).first(conn)?
        }
    };
    hex::decode(secret).map_err(|e| Error::internal("the stored cookie key", e))
}

/// Records `id` as used until `expires_at`; false when it already was.
fn first_use(conn: &mut DbConn, id: &str, expires_at: i64) -> Result<bool> {
    let insert = diesel::insert_into(saml_replays::table)
        .values((saml_replays::id.eq(id), saml_replays::expires_at.eq(expires_at)))
        .on_conflict_do_nothing();
    let inserted = match conn {
        DbConn::Sqlite(c) => insert.execute(c)?,
        DbConn::Postgres(c) => insert.execute(c)?,
    };
    Ok(inserted == 1)
}

/// A session to open, its secrets made by the caller.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id_hash: String,
    pub csrf_token: String,
    pub expires_at: i64,
}

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub directory_id: DirectoryId,
    pub user_id: UserId,
    pub user_name: String,
    pub csrf_token: String,
}

/// Finishes a verified sign-in: the assertion (and the request it answers) are used once, the
/// subject must be an active user of the directory; then the session is stored. A refusal is
/// audited and committed (the ids stay used), so it is `Ok(Err(_))`, not an error.
pub fn complete_sign_in(
    conn: &mut DbConn,
    directory: &DirectoryId,
    login: &VerifiedLogin,
    session: &NewSession,
) -> Result<std::result::Result<SessionUser, Refusal>> {
    let now = now_millis();
    diesel::delete(saml_replays::table.filter(saml_replays::expires_at.lt(now))).execute(conn)?;
    let keep_until = login.valid_until.timestamp_millis().max(now);
    let refused = |conn: &mut DbConn, refusal: Refusal, user: Option<&str>| -> Result<_> {
        audit::record(
            conn,
            &Actor::SignIn,
            change(
                directory,
                user.unwrap_or(""),
                "sign_in_refused",
                json!({ "reason": refusal.code(), "subject": login.subject }),
            ),
        )?;
        Ok(Err(refusal))
    };
    if !first_use(conn, &format!("{}:assertion:{}", directory.0, login.assertion_id), keep_until)? {
        return refused(conn, Refusal::Replayed, None);
    }
    if let Some(request) = &login.in_response_to {
        if !first_use(conn, &format!("{}:request:{request}", directory.0), keep_until)? {
            return refused(conn, Refusal::UnknownRequest, None);
        }
    }
    let candidates: Vec<(String, String, bool, Option<i64>)> = users::table
        .filter(users::directory_id.eq(&directory.0))
        .filter(users::user_name_folded.eq(fold(&login.subject)))
        .select((users::id, users::user_name, users::active, users::deprovisioned_at))
        .load(conn)?;
    let live = candidates.iter().find(|c| c.3.is_none()).or_else(|| candidates.first());
    let Some((user_id, user_name, active, deprovisioned_at)) = live.cloned() else {
        return refused(conn, Refusal::UnknownUser, None);
    };
    if !active || deprovisioned_at.is_some() {
        return refused(conn, Refusal::InactiveUser, Some(&user_id));
    }
    diesel::delete(web_sessions::table.filter(web_sessions::expires_at.lt(now))).execute(conn)?;
    diesel::insert_into(web_sessions::table)
        .values((
            web_sessions::id_hash.eq(&session.id_hash),
            web_sessions::directory_id.eq(&directory.0),
            web_sessions::user_id.eq(&user_id),
            web_sessions::csrf_token.eq(&session.csrf_token),
            web_sessions::created_at.eq(now),
            web_sessions::expires_at.eq(session.expires_at),
        ))
        .execute(conn)?;
    audit::record(conn, &Actor::SignIn, change(directory, &user_id, "sign_in", json!({})))?;
    Ok(Ok(SessionUser {
        directory_id: directory.clone(),
        user_id: UserId(user_id),
        user_name,
        csrf_token: session.csrf_token.clone(),
    }))
}

/// The live session `id_hash` names in `directory`: not revoked, not expired, and its user still
/// active (checked on every request, so a deactivation by SCIM or an importer ends it at once).
pub fn find_session(
    conn: &mut DbConn,
    directory: &DirectoryId,
    id_hash: &str,
) -> Result<Option<SessionUser>> {
    let found: Option<(String, String, String)> = web_sessions::table
        .inner_join(users::table.on(users::id.eq(web_sessions::user_id)))
        .filter(web_sessions::id_hash.eq(id_hash))
        .filter(web_sessions::directory_id.eq(&directory.0))
        .filter(web_sessions::revoked_at.is_null())
        .filter(web_sessions::expires_at.gt(now_millis()))
        .filter(users::active.eq(true))
        .filter(users::deprovisioned_at.is_null())
        .select((users::id, users::user_name, web_sessions::csrf_token))
        .first(conn)
        .optional()?;
    Ok(found.map(|(user_id, user_name, csrf_token)| SessionUser {
        directory_id: directory.clone(),
        user_id: UserId(user_id),
        user_name,
        csrf_token,
    }))
}

/// Ends a session (logout).
pub fn revoke_session(conn: &mut DbConn, id_hash: &str) -> Result<()> {
    diesel::update(web_sessions::table.find(id_hash))
        .filter(web_sessions::revoked_at.is_null())
        .set(web_sessions::revoked_at.eq(Some(now_millis())))
        .execute(conn)?;
    Ok(())
}

impl Store {
    pub async fn find_saml_idp(&self, slug: String) -> Result<Option<(Directory, Option<IdpSettings>)>> {
        self.read(move |conn, _| find_idp(conn, &slug)).await
    }

    pub async fn configure_saml(
        &self,
        actor: Actor,
        slug: String,
        settings: IdpSettings,
    ) -> Result<IdpSettings> {
        self.write(move |conn, _| configure(conn, &actor, &slug, &settings)).await
    }

    pub async fn remove_saml(&self, actor: Actor, slug: String) -> Result<()> {
        self.write(move |conn, _| remove(conn, &actor, &slug)).await
    }

    pub async fn cookie_key(&self) -> Result<Vec<u8>> {
        self.write(|conn, _| cookie_key(conn)).await
    }

    pub async fn complete_sign_in(
        &self,
        directory: DirectoryId,
        login: VerifiedLogin,
        session: NewSession,
    ) -> Result<std::result::Result<SessionUser, Refusal>> {
        self.write(move |conn, _| complete_sign_in(conn, &directory, &login, &session)).await
    }

    pub async fn find_session(&self, directory: DirectoryId, id_hash: String) -> Result<Option<SessionUser>> {
        self.read(move |conn, _| find_session(conn, &directory, &id_hash)).await
    }

    pub async fn revoke_session(&self, id_hash: String) -> Result<()> {
        self.write(move |conn, _| revoke_session(conn, &id_hash)).await
    }
}
