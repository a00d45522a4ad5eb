//! The repository: the only module that talks to the database.
//!
//! Handlers, the CLI and (later) importers call the async methods defined in the per-table
//! modules. Each runs its diesel work on the blocking pool in one transaction, so a failed
//! request leaves no trace and no async worker ever blocks on the database.

pub mod admin_tokens;
pub mod audit;
pub mod conn;
pub mod connections;
pub mod consents;
pub mod directories;
pub mod filter_sql;
pub mod groups;
pub mod keys;
pub mod list_cache;
pub mod migrate;
pub mod people;
pub mod rows;
pub mod saml;
pub mod schema;
pub mod secrets;
pub mod source_mirror;
pub mod sync_leases;
pub mod sync_runs;
pub mod usage;
pub mod users;
pub mod values;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::Connection;

pub use conn::{Backend, DatabaseUrl, DbConn};

use crate::error::{Error, Result};
use crate::ids::{DirectoryId, KeyId};
use crate::scim::resource::{if_match_admits, Meta, Stored};
use crate::scim::schema::Registry;
use keys::Principal;

type Pool = r2d2::Pool<conn::ConnectionManager>;

const DEFAULT_LAST_USED_INTERVAL_MS: i64 = 60_000;

#[derive(Clone)]
pub struct Store {
    pool: Pool,
    backend: Backend,
    registry: Arc<Registry>,
    /// SQLite: every write goes through one group-committing writer thread (see `writer`).
    /// PostgreSQL: writes run on pooled connections, concurrently.
    sqlite_writer: Option<writer::Writer>,
    /// Totals and page ends of recent lists (see `list_cache`).
    list_cache: Arc<list_cache::ListCache>,
    /// Keys this process has verified (see `keys::KnownKeys`).
    known_keys: Arc<keys::KnownKeys>,
    /// When each key's `last_used_at` was last written (see `usage`).
    last_used: Arc<usage::LastUsed>,
    /// Who this instance is when it holds a connection's sync lease, and for how long.
    sync_lease: Arc<sync_leases::LeaseTerms>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens a pool on the database the URL names. Migrations are not applied here.
    pub fn open(
        url: &str,
        pool_size: u32,
        acquire_timeout: Duration,
        sqlite_mmap_mib: u64,
        registry: Arc<Registry>,
    ) -> Result<Store> {
        let url = DatabaseUrl::parse(url)?;
        let backend = url.backend();
        let sqlite_writer = match backend {
            Backend::Sqlite => Some(writer::Writer::start(url.clone(), registry.clone())?),
            Backend::Postgres => None,
        };
        let pool = r2d2::Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(1))
            .connection_timeout(acquire_timeout)
            .build(conn::ConnectionManager::new(url, sqlite_mmap_mib))
            .map_err(|e| Error::Unavailable(format!("cannot connect to the database: {e}")))?;
        Ok(Store {
            pool,
            backend,
            registry,
            sqlite_writer,
            list_cache: Arc::default(),
            known_keys: Arc::default(),
            last_used: Arc::new(usage::LastUsed::new(DEFAULT_LAST_USED_INTERVAL_MS)),
            sync_lease: Arc::new(sync_leases::LeaseTerms::new(sync_leases::DEFAULT_TTL_MS)),
        })
    }

    /// How often a key's `last_used_at` may be written (`auth.last_used_interval_secs`).
    pub fn with_last_used_interval(mut self, interval: Duration) -> Store {
        let millis = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        self.last_used = Arc::new(usage::LastUsed::new(millis));
        self
    }

    /// How long a sync lease this instance takes lasts without renewal (`sync.lease_ttl_secs`).
    pub fn with_sync_lease_ttl(mut self, ttl: Duration) -> Store {
        let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.sync_lease = Arc::new(sync_leases::LeaseTerms::new(millis));
        self
    }

    /// The terms of the sync leases this instance takes (see `sync_leases`).
    pub fn sync_lease(&self) -> &sync_leases::LeaseTerms {
        &self.sync_lease
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool's state, for `/metrics`.
    pub fn pool_state(&self) -> crate::metrics::PoolState {
        let state = self.pool.state();
        crate::metrics::PoolState {
            connections: state.connections,
            idle: state.idle_connections,
            max_size: self.pool.max_size(),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Applies pending migrations; returns their names.
    pub fn migrate(&self) -> Result<Vec<String>> {
        let mut conn = self.connection()?;
        migrate::run_pending(&mut conn)
    }

    fn connection(&self) -> Result<r2d2::PooledConnection<conn::ConnectionManager>> {
        self.pool.get().map_err(|e| Error::Unavailable(format!("no database connection available: {e}")))
    }

    /// Runs `work` in a read transaction on the blocking pool.
    pub async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &Registry) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        run_blocking(move || store.read_now(work)).await
    }

    /// Runs `work` in one write transaction (on SQLite, a savepoint of a group commit); any
    /// error rolls it back. Resolves once the write is durable.
    pub async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &Registry) -> Result<T> + Send + 'static,
    {
        self.write_in(false, work).await
    }

    /// [`Store::write`] for a large write (an import batch): on SQLite it gets a transaction of
    /// its own, never grouped with others (see `writer`).
    pub async fn write_bulk<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &Registry) -> Result<T> + Send + 'static,
    {
        self.write_in(true, work).await
    }

    async fn write_in<T, F>(&self, bulk: bool, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &Registry) -> Result<T> + Send + 'static,
    {
        match &self.sqlite_writer {
            Some(writer) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                writer.submit(bulk, work, move |result| {
                    let _ = reply.send(result);
                })?;
                answer.await.map_err(|_| Error::Unavailable("the SQLite writer stopped".into()))?
            }
            None => {
                let store = self.clone();
                run_blocking(move || store.write_now(work)).await
            }
        }
    }

    /// [`Store::read`] on behalf of a key holder: the key is [`keys::confirm`]ed first, in the
    /// same transaction, so the request needs no separate round trip to check it.
    pub async fn read_as<T, F>(&self, principal: Principal, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &Registry, &DirectoryId) -> Result<T> + Send + 'static,
    {
        let key_id = principal.key_id.clone();
        let result = self
            .read(move |conn, registry| {
                keys::confirm(conn, &principal, now_millis())?;
                work(conn, registry, &principal.directory_id)
            })
            .await;
        self.forget_if_refused(&key_id, &result);
        result
    }

    /// [`Store::write`] on behalf of a key holder, confirmed as in [`Store::read_as`].
    pub async fn write_as<T, F>(&self, principal: Principal, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &Registry, &DirectoryId) -> Result<T> + Send + 'static,
    {
        let key_id = principal.key_id.clone();
        let result = self
            .write(move |conn, registry| {
                keys::confirm(conn, &principal, now_millis())?;
                work(conn, registry, &principal.directory_id)
            })
            .await;
        self.forget_if_refused(&key_id, &result);
        result
    }

    /// After a request: a refused key is forgotten; any other outcome was a use of the key.
    fn forget_if_refused<T>(&self, key_id: &KeyId, result: &Result<T>) {
        if let Err(Error::Unauthorized(_)) = result {
            self.known_keys.forget(key_id);
        } else {
            self.note_use(usage::TokenTable::DirectoryKeys, key_id.as_str());
        }
    }

    /// The synchronous form of [`Store::read`], for the CLI.
    pub fn read_now<T>(&self, work: impl FnOnce(&mut DbConn, &Registry) -> Result<T>) -> Result<T> {
        let mut conn = self.connection()?;
        let registry = &self.registry;
        conn.transaction(|c| work(c, registry))
    }

    /// The synchronous form of [`Store::write`], for the CLI (blocks the calling thread).
    pub fn write_now<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &Registry) -> Result<T> + Send + 'static,
    {
        match &self.sqlite_writer {
            Some(writer) => {
                let (reply, answer) = std::sync::mpsc::channel();
                writer.submit(false, work, move |result| {
                    let _ = reply.send(result);
                })?;
                answer.recv().map_err(|_| Error::Unavailable("the SQLite writer stopped".into()))?
            }
            None => {
                let mut conn = self.connection()?;
                let registry = &self.registry;
                conn.transaction(|c| work(c, registry))
            }
        }
    }

    /// Whether the database answers; for `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        self.read(|conn, _| {
            diesel::connection::SimpleConnection::batch_execute(conn, "SELECT 1").map_err(db_error)
        })
        .await
    }
}

async fn run_blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::internal("database task", e))?
}

/// Diesel errors we understand become their meaning; the rest are internal faults.
pub fn db_error(error: diesel::result::Error) -> Error {
    use diesel::result::{DatabaseErrorKind, Error as D};
    match error {
        D::NotFound => Error::NotFound("not found".into()),
        D::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
            Error::Uniqueness(format!("a value that must be unique is already taken ({})", info.message()))
        }
        D::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
            Error::Unavailable(format!("database connection closed: {}", info.message()))
        }
        // Contention, not a fault: another writer held SQLite's lock past the busy timeout, or
        // PostgreSQL chose this transaction to give way (a serialization failure or a deadlock).
        // A retry may well succeed (503).
        D::DatabaseError(DatabaseErrorKind::SerializationFailure, info) => {
            Error::Unavailable(format!("the database is busy, retry: {}", info.message()))
        }
        D::DatabaseError(_, info)
            if info.message().starts_with("database is locked")
                || info.message().starts_with("deadlock detected") =>
        {
            Error::Unavailable(format!("the database is busy, retry: {}", info.message()))
        }
        other => Error::internal("database", other),
    }
}

impl From<diesel::result::Error> for Error {
    fn from(error: diesel::result::Error) -> Self {
        db_error(error)
    }
}

/// A stored resource's JSON (`users.data`, `groups.data`) read back; anything but an object
/// means the row was damaged outside scimd.
fn parse_stored(kind: &str, id: &str, data: &str) -> Result<Stored> {
    match serde_json::from_str(data) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) | Err(_) => Err(Error::Internal(format!("{kind} {id} has a corrupt stored resource"))),
    }
}

/// `If-Match` against the current version: 412 unless it admits it (RFC 7644 §3.14).
fn check_version(meta: &Meta, if_match: Option<&str>) -> Result<()> {
    match if_match {
        Some(header) if !if_match_admits(header, meta) => Err(Error::PreconditionFailed(format!(
            "If-Match {header} does not match the current version {}",
            meta.etag()
        ))),
        _ => Ok(()),
    }
}

/// Current time in epoch milliseconds.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error as D};

    use super::*;

    /// A busy database is worth a retry (503 with Retry-After), not reported as a fault (500).
    #[test]
    fn contention_is_unavailable_not_internal() {
        let locked = D::DatabaseError(DatabaseErrorKind::Unknown, Box::new("database is locked".to_string()));
        assert!(matches!(db_error(locked), Error::Unavailable(detail) if detail.contains("retry")));
        let serialization = D::DatabaseError(
            DatabaseErrorKind::SerializationFailure,
            Box::new("could not serialize".to_string()),
        );
        assert!(matches!(db_error(serialization), Error::Unavailable(_)));
        let deadlock =
            D::DatabaseError(DatabaseErrorKind::Unknown, Box::new("deadlock detected".to_string()));
        assert!(matches!(db_error(deadlock), Error::Unavailable(_)));
        let other = D::DatabaseError(DatabaseErrorKind::Unknown, Box::new("disk I/O error".to_string()));
        assert!(matches!(db_error(other), Error::Internal(_)));
    }
}
