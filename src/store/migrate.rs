//! Embedded migrations, one tree per backend, applied by `scimd migrate` and on `serve`. They are
//! read at compile time and cargo does not watch the directory: after adding one to a built
//! tree, touch this file.

use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::conn::DbConn;
use crate::error::{Error, Result};

const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Applies pending migrations; returns the names of those applied.
pub fn run_pending(conn: &mut DbConn) -> Result<Vec<String>> {
    let applied = match conn {
        DbConn::Sqlite(c) => c.run_pending_migrations(SQLITE).map(names),
        DbConn::Postgres(c) => c.run_pending_migrations(POSTGRES).map(names),
    };
    applied.map_err(|e| Error::internal("applying migrations", e))
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
