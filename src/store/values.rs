//! `user_values`: one row per indexed value of a user (what [`index::entries`] derives), written
//! in the transaction that writes the user. A row names its attribute by a number from
//! `value_attrs`, one per (directory, attribute path). With the directory id and the path in
//! every row, the rows and their indexes took 680 MiB for 100k users instead of 305 MiB, and a
//! full import was about 15 % slower (BENCHMARKS.md).
//!
//! SCIM filters (`filter_sql`) find a number by a subquery on `value_attrs`' unique index, so
//! they compile without a database; the people search ([`numbers`]) and the code here and in
//! `users` look numbers up once and bind them.

use std::collections::{BTreeSet, HashMap, HashSet};

use diesel::prelude::*;

use super::rows::UserValueRow;
use super::schema::{user_values, value_attrs};
use super::DbConn;
use crate::error::{Error, Result};
use crate::ids::DirectoryId;
use crate::scim::index::Entry;

/// The numbers of `attrs` in `directory`, numbering those it has not had before.
fn number_attrs(conn: &mut DbConn, directory: &DirectoryId, attrs: &[&str]) -> Result<HashMap<String, i32>> {
    let mut known = numbers(conn, directory, attrs)?;
    let new: Vec<_> = attrs
        .iter()
        .filter(|attr| !known.contains_key(**attr))
        .map(|attr| (value_attrs::directory_id.eq(&directory.0), value_attrs::attr.eq(*attr)))
        .collect();
    if !new.is_empty() {
        // Another scimd instance on the same PostgreSQL may number the same path at the same
        // time: whichever commits first wins, and both read its number back.
        match conn {
            DbConn::Sqlite(c) => diesel::insert_or_ignore_into(value_attrs::table).values(&new).execute(c)?,
            DbConn::Postgres(c) => {
                diesel::insert_into(value_attrs::table).values(&new).on_conflict_do_nothing().execute(c)?
            }
        };
        known = numbers(conn, directory, attrs)?;
    }
    Ok(known)
}

/// The numbers `attrs` have in `directory` (those no user there ever had are missing).
pub fn numbers(conn: &mut DbConn, directory: &DirectoryId, attrs: &[&str]) -> Result<HashMap<String, i32>> {
    let rows: Vec<(String, i32)> = value_attrs::table
        .filter(value_attrs::directory_id.eq(&directory.0))
        .filter(value_attrs::attr.eq_any(attrs))
        .select((value_attrs::attr, value_attrs::id))
        .load(conn)?;
    Ok(rows.into_iter().collect())
}

/// `SELECT id FROM value_attrs WHERE directory_id = .. AND attr = ..`, for `eq_any` in a diesel
/// query: the number of `attr` in `directory` (one row, or none).
pub fn numbered<'a>(directory: &'a DirectoryId, attr: &'a str) -> Numbered<'a> {
    value_attrs::table
        .filter(value_attrs::directory_id.eq(directory.0.as_str()))
        .filter(value_attrs::attr.eq(attr))
        .select(value_attrs::id)
}

pub type Numbered<'a> = diesel::dsl::Select<
    diesel::dsl::Filter<
        diesel::dsl::Filter<value_attrs::table, diesel::dsl::Eq<value_attrs::directory_id, &'a str>>,
        diesel::dsl::Eq<value_attrs::attr, &'a str>,
    >,
    value_attrs::id,
>;

/// Inserts value rows, each `(user id, entry)`, for users of `directory`.
///
/// On SQLite one single-row INSERT a row: its statement is built and prepared once and stays
/// cached, and SQLite keeps no statement journal for a single-row INSERT. A multi-row one was
/// built and prepared anew each time, and journalled every page it changed in case a later row
/// failed (a fifth of the single writer's time in a large import). On PostgreSQL, where each
/// statement is a round trip, 6,000 rows a statement.
pub fn insert<'a>(
    conn: &mut DbConn,
    directory: &DirectoryId,
    entries: impl IntoIterator<Item = (&'a str, &'a Entry)>,
) -> Result<()> {
    let entries: Vec<(&str, &Entry)> = entries.into_iter().collect();
    if entries.is_empty() {
        return Ok(());
    }
    let attrs: BTreeSet<&str> = entries.iter().map(|(_, e)| e.attr.as_str()).collect();
    let numbers = number_attrs(conn, directory, &attrs.into_iter().collect::<Vec<_>>())?;
    let rows = entries
        .iter()
        .map(|(user_id, e)| {
            let attr_id = *numbers.get(&e.attr).ok_or_else(|| {
                Error::internal("numbering value attributes", format!("'{}' has no number", e.attr))
            })?;
            Ok(UserValueRow { user_id, attr_id, pos: e.pos, value: &e.value })
        })
        .collect::<Result<Vec<UserValueRow<'_>>>>()?;
    match conn {
        // A row the user already has is the same fact: keep one.
        DbConn::Sqlite(c) => {
            for row in &rows {
                diesel::insert_or_ignore_into(user_values::table).values(row).execute(c)?;
            }
        }
        DbConn::Postgres(c) => {
            for chunk in rows.chunks(6000) {
                diesel::insert_into(user_values::table).values(chunk).on_conflict_do_nothing().execute(c)?;
            }
        }
    }
    Ok(())
}

/// Makes a user's value rows `wanted`, writing only the rows that differ from what is stored: a
/// change of one attribute (a title, an e-mail) touches its own rows, not the two dozen of the
/// whole user. Compared with the rows as stored, not as derived from the old resource, so rows
/// an older version derived differently are replaced too.
pub fn rewrite(conn: &mut DbConn, directory: &DirectoryId, user_id: &str, wanted: Vec<Entry>) -> Result<()> {
    let stored: HashMap<Entry, i32> = user_values::table
        .inner_join(value_attrs::table)
        .filter(user_values::user_id.eq(user_id))
        .select((value_attrs::attr, user_values::attr_id, user_values::pos, user_values::value))
        .load::<(String, i32, i32, String)>(conn)?
        .into_iter()
        .map(|(attr, attr_id, pos, value)| (Entry { attr, pos, value }, attr_id))
        .collect();
    let wanted: HashSet<Entry> = wanted.into_iter().collect();
    for (gone, attr_id) in stored.iter().filter(|(entry, _)| !wanted.contains(*entry)) {
        diesel::delete(
            user_values::table
                .filter(user_values::user_id.eq(user_id))
                .filter(user_values::attr_id.eq(attr_id))
                .filter(user_values::pos.eq(gone.pos))
                .filter(user_values::value.eq(&gone.value)),
        )
        .execute(conn)?;
    }
    insert(conn, directory, wanted.iter().filter(|entry| !stored.contains_key(*entry)).map(|e| (user_id, e)))
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::sql_types::Text;
    use diesel::Connection;

    use super::*;
    use crate::store::conn::Backend;
    use crate::store::filter_sql::{self, SqlFragment, SqlPart, Statement};
    use crate::store::migrate;

    const NUMBERED: &str = "20261202000001";

    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = Text)]
        id: String,
    }

    fn attr_number(conn: &mut DbConn, directory: &DirectoryId, attr: &str) -> Option<i32> {
        numbered(directory, attr).first(conn).optional().unwrap()
    }

    fn matching(conn: &mut DbConn, backend: Backend, filter: &str) -> Vec<String> {
        let registry = crate::scim::schema::Registry::load().unwrap();
        let filter = crate::scim::filter::parse(filter, &registry.user).unwrap();
        let mut sql = SqlFragment::new(backend);
        sql.push_sql("SELECT users.id AS id FROM users WHERE users.directory_id = ");
        sql.push(SqlPart::Text("d1".into()));
        sql.push_sql(" AND ");
        sql.append(filter_sql::compile(&filter, "d1", backend));
        sql.push_sql(" ORDER BY users.id");
        let rows: Vec<Id> = Statement::once(sql).load(conn).unwrap();
        rows.into_iter().map(|row| row.id).collect()
    }

    /// Value rows written before attributes were numbered are all found by filters afterwards,
    /// and new rows of a known attribute get the number the migration gave it.
    fn rows_survive_the_numbering(mut conn: DbConn, backend: Backend) {
        migrate::run_pending_before(&mut conn, NUMBERED);
        conn.batch_execute(
            "INSERT INTO directories (id, slug, name, created_at) VALUES ('d1', 'd1', 'D1', 0);
             INSERT INTO directories (id, slug, name, created_at) VALUES ('d2', 'd2', 'D2', 0);
             INSERT INTO users (id, directory_id, user_name, user_name_folded, active, data, created_at,
                 modified_at, version) VALUES ('u1', 'd1', 'a', 'a', TRUE, '{}', 0, 0, 1);
             INSERT INTO users (id, directory_id, user_name, user_name_folded, active, data, created_at,
                 modified_at, version) VALUES ('u2', 'd2', 'b', 'b', TRUE, '{}', 0, 0, 1);
             INSERT INTO user_values (directory_id, user_id, attr, pos, value) VALUES
                 ('d1', 'u1', 'title', 0, 'boss'),
                 ('d1', 'u1', 'emails', 0, ''),
                 ('d1', 'u1', 'emails.type', 0, 'work'),
                 ('d1', 'u1', 'emails.value', 0, 'a@x.example'),
                 ('d2', 'u2', 'title', 0, 'boss');",
        )
        .unwrap();
        migrate::run_pending(&mut conn).unwrap();
        assert_eq!(matching(&mut conn, backend, r#"title eq "Boss""#), ["u1"]);
        assert_eq!(
            matching(&mut conn, backend, r#"emails[type eq "work" and value ew "x.example"]"#),
            ["u1"]
        );
        assert_eq!(matching(&mut conn, backend, "emails pr"), ["u1"]);
        assert!(matching(&mut conn, backend, r#"title eq "Other""#).is_empty());

        let directory = DirectoryId("d1".into());
        let title = attr_number(&mut conn, &directory, "title");
        assert!(title.is_some());
        let entry = |attr: &str, value: &str| Entry { attr: attr.into(), pos: 0, value: value.into() };
        rewrite(&mut conn, &directory, "u1", vec![entry("title", "chief"), entry("locale", "fr")]).unwrap();
        assert_eq!(attr_number(&mut conn, &directory, "title"), title);
        assert!(attr_number(&mut conn, &directory, "locale").is_some());
        assert_eq!(matching(&mut conn, backend, r#"title eq "Chief""#), ["u1"]);
        assert_eq!(matching(&mut conn, backend, r#"locale eq "fr""#), ["u1"]);
        assert!(matching(&mut conn, backend, "emails pr").is_empty());
        // The other directory's rows kept their own number.
        let other = attr_number(&mut conn, &DirectoryId("d2".into()), "title");
        assert!(other.is_some() && other != title);
    }

    #[test]
    fn value_rows_survive_the_numbering_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("values.db");
        let conn = diesel::sqlite::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        rows_survive_the_numbering(DbConn::Sqlite(conn), Backend::Sqlite);
    }

    #[test]
    fn value_rows_survive_the_numbering_on_postgres() {
        use crate::test_postgres as pg;
        let cluster = pg::pg_cluster().unwrap_or_else(|e| panic!("{e}"));
        let url = cluster.create_database(&pg::unique_database_name("value_numbering"), None).unwrap();
        let conn = diesel::pg::PgConnection::establish(&url).unwrap();
        rows_survive_the_numbering(DbConn::Postgres(conn), Backend::Postgres);
    }
}
