//! Pull-sync connections: their configuration in the clear, their secrets sealed in `secrets`
//! (owner = the connection id). Deleting a connection keeps the records it imported; they
//! simply stop being updated.

use diesel::prelude::*;
use serde_json::json;

use super::audit::{self, Actor, ResourceType};
use super::schema::connections;
use super::{consents, directories, now_millis, secrets, DbConn, Store};
use crate::encryption::SecretKey;
use crate::error::{Error, Result};
use crate::ids::DirectoryId;
use crate::sync::connection::{self, Connection};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = connections)]
struct ConnectionRow {
    id: String,
    directory_id: String,
    name: String,
    kind: String,
    config: String,
    created_at: i64,
    updated_at: i64,
    delta_state: Option<String>,
    last_full_at: Option<i64>,
}

/// A stored connection, without its secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionRecord {
    pub id: String,
    pub directory_id: DirectoryId,
    pub config: Connection,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_full_at: Option<i64>,
    pub delta_state: Option<String>,
    /// Which secrets are set, and when each was last rotated.
    pub secrets: Vec<secrets::SecretStatus>,
    /// The standing of each delegated credential that was ever connected.
    pub consents: Vec<consents::ConsentStatus>,
}

impl ConnectionRecord {
    /// The contract's JSON with each secret as `{"set", "rotated_at"}`: what may be shown.
    pub fn shown(&self) -> serde_json::Value {
        let rotated = |name: &str| {
            self.secrets
                .iter()
                .find(|s| s.name == name)
                .map(|s| crate::scim::index::format_millis(s.rotated_at))
        };
        let mut shown = self.config.shown(&rotated);
        if let (Some(consent), serde_json::Value::Object(fields)) = (self.consent(), &mut shown) {
            fields.insert("consent".into(), consent);
        }
        shown
    }

    /// Where an admin completes the delegated consent of this connection.
    pub fn authorize_path(&self) -> String {
        format!("/admin/v1/connections/{}/authorize", self.id)
    }

    /// The standing of each delegated credential, by place: [`consents::CONNECTED`] or
    /// [`consents::NEEDS_CONSENT`] with why. One that no admin has connected yet needs consent.
    pub fn consent_states(&self) -> Vec<(&'static str, String, &'static str, Option<String>)> {
        self.config
            .delegated()
            .into_iter()
            .map(|(place, auth)| {
                let client_id = auth.client_id().to_string();
                match self.consents.iter().find(|c| c.place == place) {
                    Some(c) if c.state == consents::CONNECTED => (place, client_id, consents::CONNECTED, None),
                    Some(c) => (place, client_id, consents::NEEDS_CONSENT, c.reason.clone()),
                    None => {
                        let reason = format!(
                            "no admin has connected entra.{place} (delegated sign-in of app {client_id}) yet: \
                             open {} with an admin token, or run 'scimd connection authorize', and sign in",
                            self.authorize_path()
                        );
                        (place, client_id, consents::NEEDS_CONSENT, Some(reason))
                    }
                }
            })
            .collect()
    }

    /// `{"state", "reason", "authorize", "credentials": [...]}` for a connection with a delegated
    /// credential: `needs_consent` when any of them does.
    fn consent(&self) -> Option<serde_json::Value> {
        let states = self.consent_states();
        if states.is_empty() {
            return None;
        }
        let needing = states.iter().find(|(_, _, state, _)| *state == consents::NEEDS_CONSENT);
        let credentials: Vec<serde_json::Value> = states
            .iter()
            .map(|(place, client_id, state, reason)| {
                let consented_at = self
                    .consents
                    .iter()
                    .find(|c| c.place == *place)
                    .and_then(|c| c.consented_at)
                    .map(crate::scim::index::format_millis);
                json!({ "place": place, "client_id": client_id, "state": state, "reason": reason,
                        "consented_at": consented_at })
            })
            .collect();
        Some(json!({
            "state": needing.map_or(consents::CONNECTED, |(_, _, state, _)| *state),
            "reason": needing.and_then(|(_, _, _, reason)| reason.clone()),
            "authorize": self.authorize_path(),
            "credentials": credentials,
        }))
    }
}

fn record(conn: &mut DbConn, row: ConnectionRow) -> Result<ConnectionRecord> {
    let secrets = secrets::statuses(conn, &row.id)?;
    let consents = consents::statuses(conn, &row.id)?;
    Ok(ConnectionRecord {
        config: connection::from_stored(&row.config)?,
        directory_id: DirectoryId(row.directory_id),
        created_at: row.created_at,
        updated_at: row.updated_at,
        last_full_at: row.last_full_at,
        delta_state: row.delta_state,
        secrets,
        consents,
        id: row.id,
    })
}

/// The audit entry of a change to connection `id` (also a consent's, see `consents`).
pub(super) fn change<'a>(
    directory: &'a DirectoryId,
    id: &'a str,
    operation: &'static str,
    details: serde_json::Value,
) -> audit::Change<'a> {
    audit::Change {
        directory: Some(directory),
        resource_type: ResourceType::Connection,
        resource_id: id,
        operation,
        details,
    }
}

fn unique_name(error: diesel::result::Error, name: &str) -> Error {
    match error {
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _) => {
            Error::Uniqueness(format!("this directory already has a connection named '{name}'"))
        }
        other => other.into(),
    }
}

/// Seals and stores the secrets a connection body carried; refuses without a server key.
fn store_secrets(
    conn: &mut DbConn,
    key: Option<&SecretKey>,
    directory: &DirectoryId,
    id: &str,
    taken: Vec<(connection::SecretName, String)>,
) -> Result<Vec<&'static str>> {
    if taken.is_empty() {
        return Ok(Vec::new());
    }
    let Some(key) = key else {
        return Err(Error::Forbidden(
            "this server has no secret key, so it cannot store credentials: the operator must set SCIMD_SECRET_KEY \
             (make one with 'scimd secret-key generate') and restart"
                .into(),
        ));
    };
    let mut names = Vec::new();
    for (name, value) in taken {
        secrets::put(conn, key, directory, id, name, value.as_bytes())?;
        names.push(name);
    }
    Ok(names)
}

pub fn create(
    conn: &mut DbConn,
    actor: &Actor,
    key: Option<&SecretKey>,
    directory_slug: &str,
    mut config: Connection,
) -> Result<ConnectionRecord> {
    let directory = directories::get_by_slug(conn, directory_slug)?;
    let taken = config.take_secrets()?;
    let needed = config.secret_names();
    if let Some(missing) = needed.iter().find(|n| !taken.iter().any(|(name, _)| name == *n)) {
        return Err(Error::InvalidValue(format!(
            "connection key '{missing}': a new connection needs this credential"
        )));
    }
    let now = now_millis();
    let row = ConnectionRow {
        id: uuid::Uuid::now_v7().to_string(),
        directory_id: directory.id.0.clone(),
        name: config.name.clone(),
        kind: config.kind.as_str().to_string(),
        config: connection::to_stored(&config)?,
        created_at: now,
        updated_at: now,
        delta_state: None,
        last_full_at: None,
    };
    diesel::insert_into(connections::table)
        .values(&row)
        .execute(conn)
        .map_err(|e| unique_name(e, &config.name))?;
    let set = store_secrets(conn, key, &directory.id, &row.id, taken)?;
    let details = json!({ "name": config.name, "kind": config.kind.as_str(), "secrets_set": set });
    audit::record(conn, actor, change(&directory.id, &row.id, "create", details))?;
    record(conn, row)
}

fn row(conn: &mut DbConn, id: &str) -> Result<ConnectionRow> {
    connections::table
        .find(id)
        .select(ConnectionRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no connection with id '{id}'")))
}

pub fn get(conn: &mut DbConn, id: &str) -> Result<ConnectionRecord> {
    let found = row(conn, id)?;
    record(conn, found)
}

/// A connection by `<directory>/<name>`, as the CLI names it.
pub fn get_by_name(conn: &mut DbConn, directory_slug: &str, name: &str) -> Result<ConnectionRecord> {
    let directory = directories::get_by_slug(conn, directory_slug)?;
    let found: ConnectionRow = connections::table
        .filter(connections::directory_id.eq(&directory.id.0))
        .filter(connections::name.eq(name))
        .select(ConnectionRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| {
            Error::NotFound(format!("directory '{directory_slug}' has no connection named '{name}'"))
        })?;
    record(conn, found)
}

pub fn list(conn: &mut DbConn, directory_slug: &str) -> Result<Vec<ConnectionRecord>> {
    let directory = directories::get_by_slug(conn, directory_slug)?;
    let rows: Vec<ConnectionRow> = connections::table
        .filter(connections::directory_id.eq(&directory.id.0))
        .order(connections::name.asc())
        .select(ConnectionRow::as_select())
        .load(conn)?;
    rows.into_iter().map(|r| record(conn, r)).collect()
}

/// Every connection of every directory, oldest first: the sync scheduler's round.
pub fn list_all(conn: &mut DbConn) -> Result<Vec<ConnectionRecord>> {
    let rows: Vec<ConnectionRow> = connections::table
        .order((connections::created_at.asc(), connections::id.asc()))
        .select(ConnectionRow::as_select())
        .load(conn)?;
    rows.into_iter().map(|r| record(conn, r)).collect()
}

/// Replaces a connection's configuration. Secrets sent are rotated; secrets left out keep their
/// stored value. The kind cannot change.
pub fn update(
    conn: &mut DbConn,
    actor: &Actor,
    key: Option<&SecretKey>,
    id: &str,
    mut config: Connection,
) -> Result<ConnectionRecord> {
    let current = get(conn, id)?;
    if current.config.kind != config.kind {
        return Err(Error::InvalidValue(format!(
            "connection key 'kind': a connection cannot change from {} to {}; create a new one",
            current.config.kind.as_str(),
            config.kind.as_str()
        )));
    }
    let taken = config.take_secrets()?;
    // A consent stays with its app in its tenant; any other change needs a new one.
    let kept = config.refresh_tokens_kept(&current.config);
    for (place, _) in current.config.delegated() {
        if !kept.contains(&connection::refresh_token_name(place)) {
            consents::forget(conn, id, place)?;
        }
    }
    diesel::update(connections::table.find(id))
        .set((
            connections::name.eq(&config.name),
            connections::config.eq(connection::to_stored(&config)?),
            connections::updated_at.eq(now_millis().max(current.updated_at)),
        ))
        .execute(conn)
        .map_err(|e| unique_name(e, &config.name))?;
    let rotated = store_secrets(conn, key, &current.directory_id, id, taken)?;
    // A changed auth method needs its own secret; an old method's secret is dropped.
    let needed = config.secret_names();
    let mut have = Vec::new();
    for status in secrets::statuses(conn, id)? {
        if needed.contains(&status.name.as_str()) {
            have.push(status.name);
        } else if !kept.contains(&status.name.as_str()) {
            secrets::delete(conn, id, &status.name)?;
        }
    }
    if let Some(missing) = needed.iter().find(|n| !have.iter().any(|h| h == *n)) {
        return Err(Error::InvalidValue(format!(
            "connection key '{missing}': the new auth method needs this credential"
        )));
    }
    let details = json!({ "name": config.name, "secrets_rotated": rotated });
    audit::record(conn, actor, change(&current.directory_id, id, "update", details))?;
    get(conn, id)
}

/// Deletes a connection and its secrets; what it imported stays in the directory.
pub fn delete(conn: &mut DbConn, actor: &Actor, id: &str) -> Result<()> {
    let current = get(conn, id)?;
    secrets::forget(conn, id)?;
    diesel::delete(connections::table.find(id)).execute(conn)?;
    let details = json!({ "name": current.config.name });
    audit::record(conn, actor, change(&current.directory_id, id, "delete", details))
}

/// Rule 7 of the pull-sync contract: a record a connection imported (`owner`) changes only
/// through that connection. SCIM push and other connections get a 409 naming the owner; the
/// operator's CLI may.
pub fn check_owner(conn: &mut DbConn, actor: &Actor, owner: Option<String>, what: &str) -> Result<()> {
    let Some(owner) = owner else { return Ok(()) };
    match actor {
        Actor::Importer { connection, .. } if *connection == owner => Ok(()),
        Actor::Cli | Actor::System => Ok(()),
        _ => {
            let name: Option<String> =
                connections::table.find(&owner).select(connections::name).first(conn).optional()?;
            Err(Error::Conflict(format!(
                "this {what} is imported by the connection '{}' and changes only there (pull sync owns it)",
                name.unwrap_or(owner)
            )))
        }
    }
}

impl Store {
    pub async fn create_connection(
        &self,
        actor: Actor,
        key: Option<SecretKey>,
        directory_slug: String,
        config: Connection,
    ) -> Result<ConnectionRecord> {
        self.write(move |conn, _| create(conn, &actor, key.as_ref(), &directory_slug, config)).await
    }

    pub async fn get_connection(&self, id: String) -> Result<ConnectionRecord> {
        self.read(move |conn, _| get(conn, &id)).await
    }

    pub async fn list_connections(&self, directory_slug: String) -> Result<Vec<ConnectionRecord>> {
        self.read(move |conn, _| list(conn, &directory_slug)).await
    }

    pub async fn update_connection(
        &self,
        actor: Actor,
        key: Option<SecretKey>,
        id: String,
        config: Connection,
    ) -> Result<ConnectionRecord> {
        self.write(move |conn, _| update(conn, &actor, key.as_ref(), &id, config)).await
    }

    pub async fn delete_connection(&self, actor: Actor, id: String) -> Result<()> {
        self.write(move |conn, _| delete(conn, &actor, &id)).await
    }
}
