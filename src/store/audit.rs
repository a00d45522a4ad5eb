//! The audit log: one row per change, written in the same transaction as the change, so a
//! change is never without its record and a rolled-back request leaves neither.
//!
//! Entries name attributes, never their values where a value could be a secret: a password
//! change is recorded as the attribute `password` changing, nothing more.

use diesel::prelude::*;
use serde_json::{json, Value};

use super::rows::AuditRow;
use super::schema::audit_events;
use super::{now_millis, DbConn};
use crate::error::{Error, Result};
use crate::ids::{AdminTokenId, AuditId, DirectoryId, KeyId};

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A SCIM client, by the directory key it used.
    Key(KeyId),
    /// An administrator, by the admin token used on `/admin/v1`.
    AdminToken(AdminTokenId),
    /// An importer run (pull sync): recorded by run id; the connection decides what it may change.
    Importer { connection: String, run: String },
    /// An operator at the `scimd` command line on the server's host.
    Cli,
    /// scimd itself: the first-start bootstrap, retention.
    System,
    /// A person signing in through the directory's IdP (SAML), before they are known.
    SignIn,
}

impl Actor {
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Key(_) => "key",
            Actor::AdminToken(_) => "admin_token",
            Actor::Importer { .. } => "importer",
            Actor::Cli => "cli",
            Actor::System => "system",
            Actor::SignIn => "sign_in",
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            Actor::Key(id) => Some(id.as_str()),
            Actor::AdminToken(id) => Some(id.as_str()),
            Actor::Importer { run, .. } => Some(run),
            Actor::Cli | Actor::System | Actor::SignIn => None,
        }
    }
}

/// What kind of thing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    User,
    Group,
    /// A group's member list; the resource id is the group's.
    Membership,
    Directory,
    Key,
    AdminToken,
    /// A pull-sync connection (its configuration; never its secrets).
    Connection,
    /// A directory's SAML IdP settings, and sign-ins through it.
    Saml,
}

impl ResourceType {
    pub const ALL: [ResourceType; 8] = [
        ResourceType::User,
        ResourceType::Group,
        ResourceType::Membership,
        ResourceType::Directory,
        ResourceType::Key,
        ResourceType::AdminToken,
        ResourceType::Connection,
        ResourceType::Saml,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::User => "user",
            ResourceType::Group => "group",
            ResourceType::Membership => "membership",
            ResourceType::Directory => "directory",
            ResourceType::Key => "key",
            ResourceType::AdminToken => "admin_token",
            ResourceType::Connection => "connection",
            ResourceType::Saml => "saml",
        }
    }

    pub fn parse(text: &str) -> Result<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.as_str() == text).ok_or_else(|| {
            let known: Vec<&str> = ResourceType::ALL.iter().map(|t| t.as_str()).collect();
            Error::InvalidValue(format!("resource '{text}' is not known: use one of {}", known.join(", ")))
        })
    }
}

/// One change, as recorded.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub directory: Option<&'a DirectoryId>,
    pub resource_type: ResourceType,
    pub resource_id: &'a str,
    pub operation: &'static str,
    /// JSON object: attribute names, counts, settings. Never a secret's value.
    pub details: Value,
}

/// Writes one entry; call it inside the transaction that makes the change.
pub fn record(conn: &mut DbConn, actor: &Actor, change: Change<'_>) -> Result<()> {
    record_many(conn, actor, vec![change])
}

/// Writes entries by one actor, 3,000 to a statement (9 bound values each stay below SQLite's
/// limit of 32,766); call it inside the transaction that makes the changes.
pub fn record_many(conn: &mut DbConn, actor: &Actor, changes: Vec<Change<'_>>) -> Result<()> {
    let at = now_millis();
    let rows: Vec<AuditRow> = changes
        .into_iter()
        .map(|change| AuditRow {
            id: AuditId::generate().0,
            at,
            directory_id: change.directory.map(|d| d.0.clone()),
            actor_kind: actor.kind().to_string(),
            actor_id: actor.id().map(str::to_string),
            resource_type: change.resource_type.as_str().to_string(),
            resource_id: Some(change.resource_id.to_string()),
            operation: change.operation.to_string(),
            details: change.details.to_string(),
        })
        .collect();
    for chunk in rows.chunks(3000) {
        let statement = diesel::insert_into(audit_events::table).values(chunk);
        match conn {
            DbConn::Sqlite(c) => statement.execute(c)?,
            DbConn::Postgres(c) => statement.execute(c)?,
        };
    }
    Ok(())
}

/// Member ids named in a membership entry at most; the counts are always complete.
const LISTED_MEMBERS: usize = 100;

/// Details of a membership change: how many were added and removed, and the first ids of each.
pub fn membership_details(cleared: bool, added: &[&str], removed: &[&str]) -> Value {
    let first =
        |ids: &[&str]| -> Vec<String> { ids.iter().take(LISTED_MEMBERS).map(|s| s.to_string()).collect() };
    json!({
        "cleared": cleared,
        "added_count": added.len(),
        "added": first(added),
        "removed_count": removed.len(),
        "removed": first(removed),
    })
}

/// An entry as the admin API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    pub at: i64,
    pub directory_id: Option<String>,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub operation: String,
    pub details: Value,
}

impl From<AuditRow> for Entry {
    fn from(row: AuditRow) -> Self {
        Entry {
            details: serde_json::from_str(&row.details).unwrap_or(Value::Null),
            id: row.id,
            at: row.at,
            directory_id: row.directory_id,
            actor_kind: row.actor_kind,
            actor_id: row.actor_id,
            resource_type: row.resource_type,
            resource_id: row.resource_id,
            operation: row.operation,
        }
    }
}

/// Where a page of the log starts: just older than this entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: i64,
    pub id: String,
}

impl Cursor {
    pub fn of(entry: &Entry) -> Cursor {
        Cursor { at: entry.at, id: entry.id.clone() }
    }

    pub fn encode(&self) -> String {
        format!("{}_{}", self.at, self.id)
    }

    pub fn decode(text: &str) -> Result<Cursor> {
        let invalid = || Error::InvalidValue(format!("cursor '{text}' is not one this server returned"));
        let (at, id) = text.split_once('_').ok_or_else(invalid)?;
        let at = at.parse().map_err(|_| invalid())?;
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(invalid());
        }
        Ok(Cursor { at, id: id.to_string() })
    }
}

/// Filters of an audit query; all given ones must hold. Newest entries come first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub directory: Option<DirectoryId>,
    pub resource_type: Option<ResourceType>,
    pub resource_id: Option<String>,
    pub actor_id: Option<String>,
    /// Inclusive, epoch ms.
    pub since: Option<i64>,
    /// Exclusive, epoch ms.
    pub until: Option<i64>,
    pub after: Option<Cursor>,
    pub limit: i64,
}

/// One page of entries and, when more may follow, where the next page starts.
pub fn list(conn: &mut DbConn, query: &AuditQuery) -> Result<(Vec<Entry>, Option<Cursor>)> {
    let mut select = audit_events::table.select(AuditRow::as_select()).into_boxed();
    if let Some(directory) = &query.directory {
        select = select.filter(audit_events::directory_id.eq(&directory.0));
    }
    if let Some(resource_type) = query.resource_type {
        select = select.filter(audit_events::resource_type.eq(resource_type.as_str()));
    }
    if let Some(resource_id) = &query.resource_id {
        select = select.filter(audit_events::resource_id.eq(resource_id));
    }
    if let Some(actor_id) = &query.actor_id {
        select = select.filter(audit_events::actor_id.eq(actor_id));
    }
    if let Some(since) = query.since {
        select = select.filter(audit_events::at.ge(since));
    }
    if let Some(until) = query.until {
        select = select.filter(audit_events::at.lt(until));
    }
    if let Some(after) = &query.after {
        select = select.filter(
            audit_events::at
                .lt(after.at)
                .or(audit_events::at.eq(after.at).and(audit_events::id.lt(&after.id))),
        );
    }
    // One more than asked tells whether there is a next page.
    let rows: Vec<AuditRow> = select
        .order((audit_events::at.desc(), audit_events::id.desc()))
        .limit(query.limit.saturating_add(1))
        .load(conn)?;
    let mut entries: Vec<Entry> = rows.into_iter().map(Entry::from).collect();
    let more = entries.len() as i64 > query.limit;
    entries.truncate(usize::try_from(query.limit).unwrap_or(0));
    let next = if more { entries.last().map(Cursor::of) } else { None };
    Ok((entries, next))
}

/// Deletes up to `batch` entries older than `before`; returns how many went. Batches keep
/// each transaction short, so retention never holds up requests.
pub fn prune(conn: &mut DbConn, before: i64, batch: i64) -> Result<usize> {
    let oldest = audit_events::table
        .filter(audit_events::at.lt(before))
        .order(audit_events::at.asc())
        .select(audit_events::id)
        .limit(batch)
        .load::<String>(conn)?;
    if oldest.is_empty() {
        return Ok(0);
    }
    Ok(diesel::delete(audit_events::table.filter(audit_events::id.eq_any(&oldest))).execute(conn)?)
}

impl super::Store {
    pub async fn audit_page(&self, query: AuditQuery) -> Result<(Vec<Entry>, Option<Cursor>)> {
        self.read(move |conn, _| list(conn, &query)).await
    }

    /// Deletes entries older than `before`, in short transactions; returns how many went.
    pub async fn prune_audit(&self, before: i64) -> Result<usize> {
        const BATCH: i64 = 5_000;
        let mut pruned = 0;
        loop {
            let deleted = self.write(move |conn, _| prune(conn, before, BATCH)).await?;
            pruned += deleted;
            if (deleted as i64) < BATCH {
                return Ok(pruned);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_text_is_refused() {
        let cursor = Cursor { at: 1_700_000_000_000, id: uuid::Uuid::now_v7().to_string() };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        for bad in ["", "x", "12_nope", "abc_0190c9a2-7b3e-7000-8000-000000000000"] {
            assert!(matches!(Cursor::decode(bad), Err(Error::InvalidValue(_))), "{bad}");
        }
    }

    #[test]
    fn membership_details_count_everything_and_list_the_first_ids() {
        let ids: Vec<String> = (0..150).map(|n| format!("u{n}")).collect();
        let added: Vec<&str> = ids.iter().map(String::as_str).collect();
        let details = membership_details(false, &added, &["x"]);
        assert_eq!(details["added_count"], 150);
        assert_eq!(details["added"].as_array().unwrap().len(), 100);
        assert_eq!(details["removed"], json!(["x"]));
    }

    #[test]
    fn resource_types_parse_their_own_names_only() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::parse(t.as_str()).unwrap(), t);
        }
        let detail = ResourceType::parse("users").unwrap_err().to_string();
        assert!(detail.contains("user, group"), "{detail}");
    }
}
