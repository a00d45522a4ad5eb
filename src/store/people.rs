//! People search for the lookup page: prefix matching on indexes. userName and displayName
//! use their folded columns, the other searched attributes the `user_values (directory_id,
//! attr, value)` index, each as a `>= prefix AND < prefix + U+10FFFF` range; every word of the
//! query must match some attribute. Pages continue after the last id.

use diesel::prelude::*;
use serde_json::Value;

use super::filter_sql::{SqlFragment, SqlPart, Statement};
use super::rows::IdRow;
use super::schema::users;
use super::{parse_stored, Backend, DbConn, Store};
use crate::error::Result;
use crate::ids::DirectoryId;
use crate::scim::index::fold;
use crate::scim::schema::ENTERPRISE_USER_SCHEMA;

/// The `user_values` keys searched besides the userName and displayName columns.
const SEARCHED: &[&str] = &[
    "name.givenname",
    "name.familyname",
    "name.formatted",
    "emails.value",
    "title",
    "phonenumbers.value",
    "enterprise:department",
];
/// Words of a query used at most (the rest are ignored).
const MAX_WORDS: usize = 4;

/// One person as the search box shows them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub id: String,
    pub user_name: String,
    pub display_name: Option<String>,
    pub title: Option<String>,
    pub department: Option<String>,
    pub emails: Vec<String>,
    pub phone_numbers: Vec<String>,
    pub active: bool,
}

fn prefix_range(sql: &mut SqlFragment, column: &str, word: &str) {
    sql.push_sql(column);
    sql.push_sql(" >= ");
    sql.push(SqlPart::Text(word.to_string()));
    sql.push_sql(" AND ");
    sql.push_sql(column);
    sql.push_sql(" < ");
    sql.push(SqlPart::Text(format!("{word}\u{10FFFF}")));
}

/// `users.id IN (ids of users with some searched attribute starting with word)`.
fn word_matches(sql: &mut SqlFragment, directory: &DirectoryId, word: &str) {
    sql.push_sql(" AND users.id IN (SELECT u.id FROM users u WHERE u.directory_id = ");
    sql.push(SqlPart::Text(directory.0.clone()));
    sql.push_sql(" AND ");
    prefix_range(sql, "u.user_name_folded", word);
    sql.push_sql(" UNION SELECT u.id FROM users u WHERE u.directory_id = ");
    sql.push(SqlPart::Text(directory.0.clone()));
    sql.push_sql(" AND ");
    prefix_range(sql, "u.display_name_folded", word);
    for attr in SEARCHED {
        sql.push_sql(" UNION SELECT v.user_id FROM user_values v WHERE v.directory_id = ");
        sql.push(SqlPart::Text(directory.0.clone()));
        sql.push_sql(" AND v.attr = ");
        sql.push(SqlPart::Text((*attr).to_string()));
        sql.push_sql(" AND ");
        prefix_range(sql, "v.value", word);
    }
    sql.push_sql(")");
}

/// Up to `limit` people matching `query` after id `after`, by id.
pub fn search(
    conn: &mut DbConn,
    directory: &DirectoryId,
    query: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Person>> {
    let backend = match conn {
        DbConn::Sqlite(_) => Backend::Sqlite,
        DbConn::Postgres(_) => Backend::Postgres,
    };
    let mut sql = SqlFragment::new(backend);
    sql.push_sql("SELECT users.id AS id FROM users WHERE users.directory_id = ");
    sql.push(SqlPart::Text(directory.0.clone()));
    for word in fold(query).split_whitespace().take(MAX_WORDS) {
        word_matches(&mut sql, directory, word);
    }
    if let Some(after) = after {
        sql.push_sql(" AND users.id > ");
        sql.push(SqlPart::Text(after.to_string()));
    }
    sql.push_sql(" ORDER BY users.id LIMIT ");
    sql.push(SqlPart::BigInt(limit));
    let ids: Vec<String> = Statement::once(sql).load::<IdRow>(conn)?.into_iter().map(|r| r.id).collect();
    let mut rows: Vec<(String, String, bool, Option<i64>, String)> = users::table
        .filter(users::directory_id.eq(&directory.0))
        .filter(users::id.eq_any(&ids))
        .select((users::id, users::user_name, users::active, users::deprovisioned_at, users::data))
        .load(conn)?;
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.into_iter()
        .map(|(id, user_name, active, deprovisioned_at, data)| {
            let resource = parse_stored("User", &id, &data)?;
            let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_string);
            let values = |name: &str| -> Vec<String> {
                resource
                    .get(name)
                    .and_then(Value::as_array)
                    .map(|items| items.iter().filter_map(|i| text(i.get("value"))).collect())
                    .unwrap_or_default()
            };
            Ok(Person {
                display_name: text(resource.get("displayName")),
                title: text(resource.get("title")),
                department: text(resource.get(ENTERPRISE_USER_SCHEMA).and_then(|e| e.get("department"))),
                emails: values("emails"),
                phone_numbers: values("phoneNumbers"),
                active: active && deprovisioned_at.is_none(),
                id,
                user_name,
            })
        })
        .collect()
}

impl Store {
    pub async fn search_people(
        &self,
        directory: DirectoryId,
        query: String,
        after: Option<String>,
        limit: i64,
    ) -> Result<Vec<Person>> {
        self.read(move |conn, _| search(conn, &directory, &query, after.as_deref(), limit)).await
    }
}
