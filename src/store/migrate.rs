//! Embedded migrations, one tree per backend, applied by `scimd migrate` and on `serve`. They are
//! read at compile time and cargo does not watch the directory: after adding one to a built
//! tree, touch this file.

use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::conn::DbConn;
use crate::error::{Error, Result};

const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// PostgreSQL advisory lock key held while migrating ("scimd" in ASCII).
const MIGRATION_LOCK: i64 = 0x0073_6369_6d64;

/// Applies pending migrations; returns the names of those applied.
///
/// Several instances may start at once on one database (a rollout behind a load balancer). Each
/// migrates under one lock, so the first applies what is pending and the others wait, then find
/// nothing to do. Without it they raced to create the same tables and all but one failed.
pub fn run_pending(conn: &mut DbConn) -> Result<Vec<String>> {
    let failed = |e| Error::internal("applying migrations", e);
    match conn {
        // IMMEDIATE takes the write lock before the harness reads what is applied, waiting out
        // the busy timeout; each migration is then a savepoint within it.
        DbConn::Sqlite(c) => {
            c.immediate_transaction(|c| c.run_pending_migrations(SQLITE).map(names).map_err(failed))
        }
        DbConn::Postgres(c) => {
            use diesel::RunQueryDsl;
            // A session lock, released below or when the connection closes (a crashed instance).
            diesel::sql_query("SELECT pg_advisory_lock($1)")
                .bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK)
                .execute(c)?;
            let applied = c.run_pending_migrations(POSTGRES).map(names).map_err(failed);
            let unlocked = diesel::sql_query("SELECT pg_advisory_unlock($1)")
                .bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK)
                .execute(c);
            // The migration's own error, if any, says more than the unlock's.
            let applied = applied?;
            unlocked?;
            Ok(applied)
        }
    }
}

fn names(versions: Vec<diesel::migration::MigrationVersion<'_>>) -> Vec<String> {
    versions.iter().map(|v| v.to_string()).collect()
}

/// Applies the pending migrations older than `version` (e.g. "20261202000001"), for tests that
/// write data in an older layout and then migrate it.
#[cfg(test)]
pub fn run_pending_before(conn: &mut DbConn, version: &str) {
    fn run<C: MigrationHarness<B>, B: diesel::backend::Backend>(
        conn: &mut C,
        source: EmbeddedMigrations,
        version: &str,
    ) {
        for migration in conn.pending_migrations(source).unwrap() {
            if migration.name().version().to_string().as_str() >= version {
                break;
            }
            conn.run_migration(&migration).unwrap();
        }
    }
    match conn {
        DbConn::Sqlite(c) => run(c, SQLITE, version),
        DbConn::Postgres(c) => run(c, POSTGRES, version),
    }
}
