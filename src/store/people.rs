//! People search for the lookup page: prefix matching on indexes. userName and displayName
//! use their folded columns, the other searched attributes the `user_values (directory_id,
//! attr, value)` index, each as a `>= prefix AND < prefix + U+10FFFF` range; every word of the
//! query must match some attribute. Pages continue after the last id. A page is first looked
//! for among the next people in id order (cheap when the prefixes are common), then collected
//! from the indexes (cheap when they are rare); see [`search`]. And one person's page:
//! contact data, manager, direct reports (by the `users (directory_id, manager_id)` index) and
//! groups. Deactivated and deprovisioned people are included, marked `active: false`, unless
//! the directory's `show_deactivated` is off.

use diesel::prelude::*;
use serde_json::Value;

use super::filter_sql::{SqlFragment, SqlPart, Statement};
use super::groups::{self, GroupRef};
use super::rows::IdRow;
use super::schema::users;
use super::{parse_stored, Backend, DbConn, Store};
use crate::error::Result;
use crate::ids::DirectoryId;
use crate::scim::index::fold;
use crate::scim::resource::Stored;
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
/// People checked one by one, in id order, before the search turns to the indexes.
const SCAN_WINDOW: i64 = 1000;

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

impl Person {
    /// What to call them: the displayName, else the userName.
    pub fn name(&self) -> &str {
        self.display_name.as_deref().filter(|n| !n.trim().is_empty()).unwrap_or(&self.user_name)
    }
}

/// One value of a multi-valued contact attribute, with its type ("work", "mobile").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub value: String,
    pub kind: Option<String>,
}

/// A person named on another's page: linked when `id` is set (a person of the directory the
/// lookup shows), else only named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonLink {
    pub id: Option<String>,
    pub name: String,
    pub active: bool,
}

/// Everything a person's page shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub person: Person,
    pub emails: Vec<Contact>,
    pub phone_numbers: Vec<Contact>,
    /// Each address as lines of text.
    pub addresses: Vec<Contact>,
    pub manager: Option<PersonLink>,
    pub reports: Vec<PersonLink>,
    pub groups: Vec<GroupRef>,
}

/// Direct reports listed on a page at most.
const MAX_REPORTS: i64 = 1000;

fn prefix_range(sql: &mut SqlFragment, column: &str, word: &str) {
    sql.push_sql(column);
    sql.push_sql(" >= ");
    sql.push(SqlPart::Text(word.to_string()));
    sql.push_sql(" AND ");
    sql.push_sql(column);
    sql.push_sql(" < ");
    sql.push(SqlPart::Text(format!("{word}\u{10FFFF}")));
}

/// The ids of the users with some searched attribute starting with `word`: one index range
/// per attribute.
fn matching_ids(sql: &mut SqlFragment, directory: &DirectoryId, word: &str) {
    sql.push_sql("SELECT u.id AS id FROM users u WHERE u.directory_id = ");
    sql.push(SqlPart::Text(directory.0.clone()));
    sql.push_sql(" AND ");
    prefix_range(sql, "u.user_name_folded", word);
    sql.push_sql(" UNION SELECT u.id AS id FROM users u WHERE u.directory_id = ");
    sql.push(SqlPart::Text(directory.0.clone()));
    sql.push_sql(" AND ");
    prefix_range(sql, "u.display_name_folded", word);
    for attr in SEARCHED {
        sql.push_sql(" UNION SELECT v.user_id AS id FROM user_values v WHERE v.directory_id = ");
        sql.push(SqlPart::Text(directory.0.clone()));
        sql.push_sql(" AND v.attr = ");
        sql.push(SqlPart::Text((*attr).to_string()));
        sql.push_sql(" AND ");
        prefix_range(sql, "v.value", word);
    }
}

/// ` AND (<the user row `alias` has some searched attribute starting with word>)`, checked on
/// the row and its values.
fn row_matches(sql: &mut SqlFragment, alias: &str, word: &str) {
    sql.push_sql(" AND (");
    prefix_range(sql, &format!("{alias}.user_name_folded"), word);
    sql.push_sql(" OR ");
    prefix_range(sql, &format!("{alias}.display_name_folded"), word);
    sql.push_sql(" OR EXISTS (SELECT 1 FROM user_values v WHERE v.user_id = ");
    sql.push_sql(alias);
    sql.push_sql(".id AND v.attr IN (");
    for (n, attr) in SEARCHED.iter().enumerate() {
        sql.push_sql(if n == 0 { "" } else { ", " });
        sql.push(SqlPart::Text((*attr).to_string()));
    }
    sql.push_sql(") AND ");
    prefix_range(sql, "v.value", word);
    sql.push_sql("))");
}

/// People of the directory checked one by one in id order, at most [`SCAN_WINDOW`] of them.
fn window_statement(
    backend: Backend,
    directory: &DirectoryId,
    terms: &[String],
    after: Option<&str>,
    limit: i64,
    show_deactivated: bool,
) -> SqlFragment {
    let mut sql = SqlFragment::new(backend);
    sql.push_sql(
        "SELECT u.id AS id FROM (SELECT users.id AS id, users.user_name_folded AS user_name_folded, \
         users.display_name_folded AS display_name_folded FROM users WHERE users.directory_id = ",
    );
    sql.push(SqlPart::Text(directory.0.clone()));
    live_and_after(&mut sql, after, show_deactivated);
    sql.push_sql(" ORDER BY users.id LIMIT ");
    sql.push(SqlPart::BigInt(SCAN_WINDOW));
    sql.push_sql(") u WHERE 1 = 1");
    for word in terms {
        row_matches(&mut sql, "u", word);
    }
    sql.push_sql(" ORDER BY u.id LIMIT ");
    sql.push(SqlPart::BigInt(limit));
    sql
}

/// Everyone matching, collected from the indexes: the matches of the longest term (the most
/// selective, likely), kept when they match the other terms too. `CROSS JOIN` keeps SQLite from
/// walking the whole directory in id order and probing the matches instead.
fn index_statement(
    backend: Backend,
    directory: &DirectoryId,
    terms: &[String],
    after: Option<&str>,
    limit: i64,
    show_deactivated: bool,
) -> SqlFragment {
    let mut sql = SqlFragment::new(backend);
    let longest = terms.iter().enumerate().max_by_key(|(n, t)| (t.chars().count(), std::cmp::Reverse(*n)));
    sql.push_sql("SELECT users.id AS id FROM (");
    if let Some((_, word)) = longest {
        matching_ids(&mut sql, directory, word);
    }
    sql.push_sql(") m CROSS JOIN users WHERE users.id = m.id AND users.directory_id = ");
    sql.push(SqlPart::Text(directory.0.clone()));
    for (n, word) in terms.iter().enumerate() {
        if longest.map(|(l, _)| l) != Some(n) {
            sql.push_sql(" AND users.id IN (");
            matching_ids(&mut sql, directory, word);
            sql.push_sql(")");
        }
    }
    live_and_after(&mut sql, after, show_deactivated);
    sql.push_sql(" ORDER BY users.id LIMIT ");
    sql.push(SqlPart::BigInt(limit));
    sql
}

fn live_and_after(sql: &mut SqlFragment, after: Option<&str>, show_deactivated: bool) {
    if !show_deactivated {
        sql.push_sql(" AND users.active = ");
        sql.push(SqlPart::Bool(true));
        sql.push_sql(" AND users.deprovisioned_at IS NULL");
    }
    if let Some(after) = after {
        sql.push_sql(" AND users.id > ");
        sql.push(SqlPart::Text(after.to_string()));
    }
}

/// The folded terms of a query, each a prefix some searched attribute must start with: its
/// words, or, for a query without letters (a phone number, "+1 555 01"), the whole of it.
fn terms(query: &str) -> Vec<String> {
    let folded = fold(query);
    if folded.chars().any(char::is_alphabetic) {
        folded.split_whitespace().take(MAX_WORDS).map(str::to_string).collect()
    } else {
        let whole = folded.split_whitespace().collect::<Vec<_>>().join(" ");
        if whole.is_empty() {
            Vec::new()
        } else {
            vec![whole]
        }
    }
}

/// Up to `limit` people matching `query` after id `after`, by id; deactivated ones only when
/// `show_deactivated`.
pub fn search(
    conn: &mut DbConn,
    directory: &DirectoryId,
    query: &str,
    after: Option<&str>,
    limit: i64,
    show_deactivated: bool,
) -> Result<Vec<Person>> {
    let backend = match conn {
        DbConn::Sqlite(_) => Backend::Sqlite,
        DbConn::Postgres(_) => Backend::Postgres,
    };
    let terms = terms(query);
    // Common prefixes match much of the directory: checking people in id order finds a page
    // after a few rows. Rare ones match few: collecting their matches from the value indexes is
    // cheap. So check a window of people in order first, and only when it holds less than a
    // page (the terms are rare there, under one match in 50 rows) collect from the indexes.
    let mut ids: Vec<String> =
        Statement::once(window_statement(backend, directory, &terms, after, limit, show_deactivated))
            .load::<IdRow>(conn)?
            .into_iter()
            .map(|r| r.id)
            .collect();
    if (ids.len() as i64) < limit && !terms.is_empty() {
        ids = Statement::once(index_statement(backend, directory, &terms, after, limit, show_deactivated))
            .load::<IdRow>(conn)?
            .into_iter()
            .map(|r| r.id)
            .collect();
    }
    let mut rows: Vec<(String, String, bool, Option<i64>, String)> = users::table
        .filter(users::directory_id.eq(&directory.0))
        .filter(users::id.eq_any(&ids))
        .select((users::id, users::user_name, users::active, users::deprovisioned_at, users::data))
        .load(conn)?;
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.into_iter()
        .map(|(id, user_name, active, deprovisioned_at, data)| {
            Ok(person_of(id, user_name, active, deprovisioned_at, &data)?.0)
        })
        .collect()
}

type PersonColumns = (String, String, bool, Option<i64>, String);

fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty()).map(str::to_string)
}

/// A person from their row's columns, with the stored resource.
fn person_of(
    id: String,
    user_name: String,
    active: bool,
    deprovisioned_at: Option<i64>,
    data: &str,
) -> Result<(Person, Stored)> {
    let resource = parse_stored("User", &id, data)?;
    let values = |name: &str| -> Vec<String> {
        resource
            .get(name)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(|i| text(i.get("value"))).collect())
            .unwrap_or_default()
    };
    let person = Person {
        display_name: text(resource.get("displayName")),
        title: text(resource.get("title")),
        department: text(resource.get(ENTERPRISE_USER_SCHEMA).and_then(|e| e.get("department"))),
        emails: values("emails"),
        phone_numbers: values("phoneNumbers"),
        active: active && deprovisioned_at.is_none(),
        id,
        user_name,
    };
    Ok((person, resource))
}

/// The values of multi-valued `name` with their types, the primary first.
fn contacts(resource: &Stored, name: &str) -> Vec<Contact> {
    let mut found: Vec<(bool, Contact)> = resource
        .get(name)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    let value =
                        if name == "addresses" { address_text(item) } else { text(item.get("value")) }?;
                    let primary = item.get("primary").and_then(Value::as_bool).unwrap_or(false);
                    Some((primary, Contact { value, kind: text(item.get("type")) }))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|(primary, _)| !primary);
    found.into_iter().map(|(_, contact)| contact).collect()
}

/// An address as lines: its `formatted` text, else its parts.
fn address_text(address: &Value) -> Option<String> {
    if let Some(formatted) = text(address.get("formatted")) {
        return Some(formatted);
    }
    let part = |key: &str| text(address.get(key));
    let town =
        [part("postalCode"), part("locality"), part("region")].into_iter().flatten().collect::<Vec<_>>();
    let lines: Vec<String> =
        [part("streetAddress"), (!town.is_empty()).then(|| town.join(" ")), part("country")]
            .into_iter()
            .flatten()
            .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

fn columns_of(
    conn: &mut DbConn,
    directory: &DirectoryId,
    id: &str,
) -> Result<Option<(PersonColumns, Option<String>)>> {
    Ok(users::table
        .filter(users::directory_id.eq(&directory.0))
        .filter(users::id.eq(id))
        .select((
            (users::id, users::user_name, users::active, users::deprovisioned_at, users::data),
            users::manager_id,
        ))
        .first(conn)
        .optional()?)
}

/// The page of person `id` of `directory`: `None` when there is none, or when they are
/// deactivated and the directory does not show deactivated people.
pub fn profile(
    conn: &mut DbConn,
    directory: &DirectoryId,
    id: &str,
    show_deactivated: bool,
) -> Result<Option<Profile>> {
    let Some(((id, user_name, active, deprovisioned_at, data), manager_id)) =
        columns_of(conn, directory, id)?
    else {
        return Ok(None);
    };
    let (person, resource) = person_of(id, user_name, active, deprovisioned_at, &data)?;
    if !person.active && !show_deactivated {
        return Ok(None);
    }
    let shown = |p: &Person| p.active || show_deactivated;
    // The manager: linked when it resolved to a person shown here, else named as sent.
    let sent = resource.get(ENTERPRISE_USER_SCHEMA).and_then(|e| e.get("manager"));
    let sent_name = sent.and_then(|m| text(m.get("displayName")).or_else(|| text(m.get("value"))));
    let linked = match &manager_id {
        Some(manager_id) => columns_of(conn, directory, manager_id)?
            .map(|((id, user_name, active, deprovisioned_at, data), _)| {
                person_of(id, user_name, active, deprovisioned_at, &data)
            })
            .transpose()?
            .map(|(manager, _)| manager),
        None => None,
    };
    let manager = match linked {
        Some(manager) if shown(&manager) => Some(PersonLink {
            name: manager.name().to_string(),
            active: manager.active,
            id: Some(manager.id),
        }),
        Some(manager) => {
            Some(PersonLink { id: None, name: manager.name().to_string(), active: manager.active })
        }
        None => sent_name.map(|name| PersonLink { id: None, name, active: true }),
    };
    let rows: Vec<PersonColumns> = users::table
        .filter(users::directory_id.eq(&directory.0))
        .filter(users::manager_id.eq(&person.id))
        .select((users::id, users::user_name, users::active, users::deprovisioned_at, users::data))
        .limit(MAX_REPORTS)
        .load(conn)?;
    let mut reports = Vec::with_capacity(rows.len());
    for (id, user_name, active, deprovisioned_at, data) in rows {
        let (report, _) = person_of(id, user_name, active, deprovisioned_at, &data)?;
        if shown(&report) {
            reports.push(PersonLink {
                name: report.name().to_string(),
                active: report.active,
                id: Some(report.id),
            });
        }
    }
    reports.sort_by_cached_key(|r| (fold(&r.name), r.id.clone()));
    let mut groups = groups::groups_of(conn, &[person.id.as_str()])?.remove(&person.id).unwrap_or_default();
    groups.sort_by_cached_key(|g| fold(&g.display_name));
    Ok(Some(Profile {
        emails: contacts(&resource, "emails"),
        phone_numbers: contacts(&resource, "phoneNumbers"),
        addresses: contacts(&resource, "addresses"),
        manager,
        reports,
        groups,
        person,
    }))
}

impl Store {
    pub async fn search_people(
        &self,
        directory: DirectoryId,
        query: String,
        after: Option<String>,
        limit: i64,
        show_deactivated: bool,
    ) -> Result<Vec<Person>> {
        self.read(move |conn, _| search(conn, &directory, &query, after.as_deref(), limit, show_deactivated))
            .await
    }

    pub async fn find_profile(
        &self,
        directory: DirectoryId,
        id: String,
        show_deactivated: bool,
    ) -> Result<Option<Profile>> {
        self.read(move |conn, _| profile(conn, &directory, &id, show_deactivated)).await
    }
}

#[cfg(test)]
mod tests {
    use super::terms;

    #[test]
    fn a_query_is_its_words_or_a_whole_phone_number() {
        assert_eq!(terms("Maria  GA"), ["maria", "ga"]);
        assert_eq!(terms("a b c d e f"), ["a", "b", "c", "d"]);
        assert_eq!(terms(" +1  555 01 "), ["+1 555 01"]);
        assert_eq!(terms("   "), Vec::<String>::new());
    }
}
