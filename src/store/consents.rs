//! Delegated sign-in of Entra connections (`graph-api.md` §1.4): the consent requests under way
//! (one per authorize link handed out, good once, for ten minutes) and the standing of each
//! delegated credential. The refresh token a consent yields is an importer secret (see
//! `secrets`), kept under [`refresh_token_name`]; it is never shown, only whether it is set.

use diesel::prelude::*;
use serde_json::json;

use super::audit::{self, Actor};
use super::schema::{connection_consents, consent_requests};
use super::{connections, now_millis, secrets, DbConn};
use crate::encryption::{Sealed, SecretKey};
use crate::error::{Error, Result};
use crate::ids::AdminTokenId;
use crate::sync::connection::refresh_token_name;

/// How long an authorize link works: Microsoft's sign-in and consent take a minute or two.
pub const REQUEST_LIFETIME_MS: i64 = 10 * 60 * 1000;

/// A delegated credential that has a refresh token that worked when last used.
pub const CONNECTED: &str = "connected";
/// A delegated credential that no admin has connected yet, or whose refresh token Entra refused.
pub const NEEDS_CONSENT: &str = "needs_consent";

/// The standing of one delegated credential of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentStatus {
    /// `auth` or `backup_auth`.
    pub place: String,
    /// [`CONNECTED`] or [`NEEDS_CONSENT`].
    pub state: String,
    /// Why it needs consent: the remedy of Entra's refusal.
    pub reason: Option<String>,
    /// When an admin last completed the consent.
    pub consented_at: Option<i64>,
    pub changed_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = consent_requests)]
struct RequestRow {
    id: String,
    state_hash: String,
    connection_id: String,
    place: String,
    client_id: String,
    redirect_uri: String,
    verifier_nonce: String,
    verifier_ciphertext: String,
    actor_kind: String,
    actor_id: Option<String>,
    created_at: i64,
    expires_at: i64,
}

/// A consent request as its callback finds it.
#[derive(Clone)]
pub struct ConsentRequest {
    pub id: String,
    pub connection_id: String,
    /// `auth` or `backup_auth`.
    pub place: String,
    /// The app the link was made for; the connection must still name it.
    pub client_id: String,
    /// Sent again with the code, as the token endpoint requires.
    pub redirect_uri: String,
    /// The PKCE code verifier of the link's challenge.
    pub code_verifier: String,
    /// Who asked for the link: the consent is recorded as theirs.
    pub actor: Actor,
    pub created_at: i64,
    pub expires_at: i64,
}

impl std::fmt::Debug for ConsentRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsentRequest")
            .field("id", &self.id)
            .field("connection_id", &self.connection_id)
            .field("place", &self.place)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a new consent request stores.
#[derive(Clone)]
pub struct NewRequest {
    pub connection_id: String,
    pub place: String,
    pub client_id: String,
    pub redirect_uri: String,
    /// SHA-256 (hex) of the `state` sent to Microsoft: the callback is found by it.
    pub state_hash: String,
    pub code_verifier: String,
}

/// The associated data of a sealed code verifier: its row.
fn context(id: &str) -> String {
    format!("consent_requests/{id}")
}

use super::connections::change;

/// Stores a consent request made by `actor`; returns when it expires. Expired requests of any
/// connection are dropped on the way.
pub fn create_request(conn: &mut DbConn, key: &SecretKey, actor: &Actor, new: NewRequest) -> Result<i64> {
    let connection = connections::get(conn, &new.connection_id)?;
    let now = now_millis();
    diesel::delete(consent_requests::table.filter(consent_requests::expires_at.lt(now))).execute(conn)?;
    let id = uuid::Uuid::now_v7().to_string();
    let Sealed { nonce, ciphertext } = key.seal(new.code_verifier.as_bytes(), &context(&id))?;
    let row = RequestRow {
        id: id.clone(),
        state_hash: new.state_hash,
        connection_id: new.connection_id.clone(),
        place: new.place.clone(),
        client_id: new.client_id.clone(),
        redirect_uri: new.redirect_uri,
        verifier_nonce: nonce,
        verifier_ciphertext: ciphertext,
        actor_kind: actor.kind().to_string(),
        actor_id: actor.id().map(str::to_string),
        created_at: now,
        expires_at: now + REQUEST_LIFETIME_MS,
    };
    diesel::insert_into(consent_requests::table).values(&row).execute(conn)?;
    let details = json!({ "place": new.place, "client_id": new.client_id });
    audit::record(conn, actor, change(&connection.directory_id, &new.connection_id, "authorize", details))?;
    Ok(row.expires_at)
}

/// Takes the request whose `state` hashes to `state_hash` out of the table: it answers one
/// callback only, whatever comes of it. `None` when there is none (never made, used already,
/// or dropped as expired); an expired one is returned, for the caller to refuse by its time.
pub fn take_request(conn: &mut DbConn, key: &SecretKey, state_hash: &str) -> Result<Option<ConsentRequest>> {
    let found: Option<RequestRow> = consent_requests::table
        .filter(consent_requests::state_hash.eq(state_hash))
        .select(RequestRow::as_select())
        .first(conn)
        .optional()?;
    let Some(row) = found else { return Ok(None) };
    diesel::delete(consent_requests::table.find(&row.id)).execute(conn)?;
    let sealed = Sealed { nonce: row.verifier_nonce, ciphertext: row.verifier_ciphertext };
    let verifier = key.open(&sealed, &context(&row.id))?;
    let code_verifier = String::from_utf8(verifier)
        .map_err(|_| Error::Internal("a stored PKCE code verifier is not text".into()))?;
    let actor = match (row.actor_kind.as_str(), row.actor_id) {
        ("admin_token", Some(id)) => Actor::AdminToken(AdminTokenId(id)),
        ("cli", _) => Actor::Cli,
        _ => Actor::System,
    };
    Ok(Some(ConsentRequest {
        id: row.id,
        connection_id: row.connection_id,
        place: row.place,
        client_id: row.client_id,
        redirect_uri: row.redirect_uri,
        code_verifier,
        actor,
        created_at: row.created_at,
        expires_at: row.expires_at,
    }))
}

/// Sets the standing of a credential, keeping when it was consented unless `consented_at` says.
fn set_status(
    conn: &mut DbConn,
    connection_id: &str,
    place: &str,
    state: &str,
    reason: Option<&str>,
    consented_at: Option<i64>,
) -> Result<()> {
    let now = now_millis();
    let at = connection_consents::table.find((connection_id, place));
    let updated = match consented_at {
        Some(consented) => diesel::update(at)
            .set((
                connection_consents::state.eq(state),
                connection_consents::reason.eq(reason),
                connection_consents::consented_at.eq(Some(consented)),
                connection_consents::changed_at.eq(now),
            ))
            .execute(conn)?,
        None => diesel::update(at)
            .set((
                connection_consents::state.eq(state),
                connection_consents::reason.eq(reason),
                connection_consents::changed_at.eq(now),
            ))
            .execute(conn)?,
    };
    if updated == 0 {
        diesel::insert_into(connection_consents::table)
            .values((
                connection_consents::connection_id.eq(connection_id),
                connection_consents::place.eq(place),
                connection_consents::state.eq(state),
                connection_consents::reason.eq(reason),
                connection_consents::consented_at.eq(consented_at),
                connection_consents::changed_at.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Completes a consent: the refresh token Microsoft gave for `request` is sealed and kept, and
/// the credential is connected again, recorded as the consent of whoever asked for the link.
/// Refused with `Conflict` when the connection no longer has that delegated credential.
pub fn complete(
    conn: &mut DbConn,
    key: &SecretKey,
    request: &ConsentRequest,
    refresh_token: &str,
) -> Result<connections::ConnectionRecord> {
    let connection = connections::get(conn, &request.connection_id)?;
    let still = connection
        .config
        .delegated()
        .iter()
        .any(|(place, auth)| *place == request.place && auth.client_id() == request.client_id);
    if !still {
        return Err(Error::Conflict(format!(
            "connection '{}' changed while the admin signed in: entra.{} no longer uses delegated sign-in \
             of app {}; ask for a new authorize link",
            connection.config.name, request.place, request.client_id
        )));
    }
    let name = refresh_token_name(&request.place);
    secrets::put(conn, key, &connection.directory_id, &connection.id, name, refresh_token.as_bytes())?;
    set_status(conn, &connection.id, &request.place, CONNECTED, None, Some(now_millis()))?;
    let details = json!({ "place": request.place, "client_id": request.client_id });
    audit::record(
        conn,
        &request.actor,
        change(&connection.directory_id, &connection.id, "consent", details),
    )?;
    connections::get(conn, &connection.id)
}

/// Keeps the newest refresh token of a delegated credential (each refresh returns a new one) and
/// marks it connected. Nothing happens when the connection was deleted meanwhile.
pub fn keep_refresh_token(
    conn: &mut DbConn,
    key: &SecretKey,
    connection_id: &str,
    place: &str,
    refresh_token: &str,
) -> Result<()> {
    let connection = match connections::get(conn, connection_id) {
        Ok(connection) => connection,
        Err(Error::NotFound(_)) => return Ok(()),
        Err(other) => return Err(other),
    };
    if !connection.config.delegated().iter().any(|(at, _)| *at == place) {
        return Ok(());
    }
    let name = refresh_token_name(place);
    secrets::put(conn, key, &connection.directory_id, connection_id, name, refresh_token.as_bytes())?;
    set_status(conn, connection_id, place, CONNECTED, None, None)
}

/// Marks a delegated credential as needing a new consent, with the remedy of Entra's refusal.
pub fn mark_needs_consent(conn: &mut DbConn, connection_id: &str, place: &str, reason: &str) -> Result<()> {
    let connection = match connections::get(conn, connection_id) {
        Ok(connection) => connection,
        Err(Error::NotFound(_)) => return Ok(()),
        Err(other) => return Err(other),
    };
    let already =
        statuses(conn, connection_id)?.into_iter().any(|s| s.place == place && s.state == NEEDS_CONSENT);
    set_status(conn, connection_id, place, NEEDS_CONSENT, Some(reason), None)?;
    // Recorded when the consent is lost, not on every run that finds it lost.
    if !already {
        let details = json!({ "place": place, "reason": reason });
        audit::record(
            conn,
            &Actor::System,
            change(&connection.directory_id, connection_id, "consent_lost", details),
        )?;
    }
    Ok(())
}

/// The standing of each delegated credential of a connection that has one.
pub fn statuses(conn: &mut DbConn, connection_id: &str) -> Result<Vec<ConsentStatus>> {
    Ok(connection_consents::table
        .filter(connection_consents::connection_id.eq(connection_id))
        .order(connection_consents::place.asc())
        .select((
            connection_consents::place,
            connection_consents::state,
            connection_consents::reason,
            connection_consents::consented_at,
            connection_consents::changed_at,
        ))
        .load::<(String, String, Option<String>, Option<i64>, i64)>(conn)?
        .into_iter()
        .map(|(place, state, reason, consented_at, changed_at)| ConsentStatus {
            place,
            state,
            reason,
            consented_at,
            changed_at,
        })
        .collect())
}

/// Forgets a credential's consent (its standing and its refresh token): the connection's
/// configuration changed so that it no longer applies.
pub fn forget(conn: &mut DbConn, connection_id: &str, place: &str) -> Result<()> {
    diesel::delete(connection_consents::table.find((connection_id, place))).execute(conn)?;
    secrets::delete(conn, connection_id, refresh_token_name(place))?;
    Ok(())
}
