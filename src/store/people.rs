//! People search for the lookup page: prefix matching on indexes. userName and displayName
//! use their folded columns, the other searched attributes the `user_values (attr_id, value)`
//! index, each as a `>= prefix AND < prefix + U+10FFFF` range; every word of the
//! query must match some attribute. Pages continue after the last id. Each word's index
//! entries are counted first (capped); then a page is looked for among the next people in id
//! order (cheap when the prefixes are common), else collected from the indexes of the rarest
//! word and checked against the others (cheap when it is rare); see [`search`]. And one
//! person's page: contact data, manager, direct reports (by the `users (directory_id,
//! manager_id)` index) and groups. Deactivated and deprovisioned people are included, marked
//! `active: false`, unless the directory's `show_deactivated` is off.

use std::collections::HashMap;

use diesel::prelude::*;
use serde_json::Value;

use super::filter_sql::{SqlFragment, SqlPart, Statement};
use super::groups::{self, GroupRef};
use super::rows::IdRow;
use super::schema::users;
use super::values;
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

/// Where a word is looked for: the folded userName and displayName columns of `users`, and each
/// [`SEARCHED`] key of `user_values`, by its number in the directory (see `store::values`);
/// each has a prefix-friendly index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    UserName,
    DisplayName,
    Value(i32),
}

/// Every source, in a fixed order (estimates name them by position). The numbers are bound, not
/// looked up by a subquery in each statement: PostgreSQL then probes each person's values by
/// `(user_id, attr_id)` instead of reading all of them and filtering (`maria ga`, 100k people,
/// one client: 42.6 ms p50 with the subquery, 32.5 ms bound). An attribute no one in the
/// directory has gets a number no row carries (0), so the statements keep their shape.
fn sources(numbers: &HashMap<String, i32>) -> Vec<Source> {
    let values = SEARCHED.iter().map(|attr| Source::Value(numbers.get(*attr).copied().unwrap_or(0)));
    [Source::UserName, Source::DisplayName].into_iter().chain(values).collect()
}

/// Index entries counted per word and source at most when estimating (see [`estimate`]).
const ESTIMATE_CAP: i64 = 1000;

/// A word of the query, with what its estimate found: the sources holding some value that starts
/// with it, and how many index entries start with it (each source counted up to
/// [`ESTIMATE_CAP`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    word: String,
    sources: Vec<Source>,
    entries: i64,
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

/// `SELECT <id> AS id FROM ...`: the entries of `source` starting with `word`, by its index.
/// `id` is the expression selected, by default the user's id.
fn source_entries(
    sql: &mut SqlFragment,
    directory: &DirectoryId,
    source: Source,
    word: &str,
    id: Option<&str>,
) {
    let (from, user_id, column) = match source {
        Source::UserName => ("users u", "u.id", "u.user_name_folded"),
        Source::DisplayName => ("users u", "u.id", "u.display_name_folded"),
        Source::Value(_) => ("user_values v", "v.user_id", "v.value"),
    };
    sql.push_sql(&format!("SELECT {} AS id FROM {from} WHERE ", id.unwrap_or(user_id)));
    if let Source::Value(number) = source {
        sql.push_sql("v.attr_id = ");
        sql.push(SqlPart::Int(number));
    } else {
        sql.push_sql("u.directory_id = ");
        sql.push(SqlPart::Text(directory.0.clone()));
    }
    sql.push_sql(" AND ");
    prefix_range(sql, column, word);
}

/// How common each word is: for each word and source, `(term, source, entries)` with the index
/// entries of that source starting with the word, counted from the index alone up to
/// [`ESTIMATE_CAP`]. Its shape depends only on the number of words, so it is cached.
fn estimate_statement(
    backend: Backend,
    directory: &DirectoryId,
    sources: &[Source],
    words: &[String],
) -> SqlFragment {
    let mut sql = SqlFragment::new(backend);
    for (n, word) in words.iter().enumerate() {
        for (k, source) in sources.iter().enumerate() {
            sql.push_sql(if n + k == 0 { "" } else { " UNION ALL " });
            sql.push_sql(&format!("SELECT {n} AS term, {k} AS source, (SELECT COUNT(*) FROM ("));
            source_entries(&mut sql, directory, *source, word, Some("1"));
            sql.push_sql(" LIMIT ");
            sql.push(SqlPart::BigInt(ESTIMATE_CAP));
            sql.push_sql(") e) AS entries");
        }
    }
    sql
}

#[derive(Debug, QueryableByName)]
struct EstimateRow {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    term: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    source: i32,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    entries: i64,
}

/// The words with their estimates (see [`Term`]).
fn estimate(
    conn: &mut DbConn,
    backend: Backend,
    directory: &DirectoryId,
    words: Vec<String>,
) -> Result<Vec<Term>> {
    let all = sources(&values::numbers(conn, directory, SEARCHED)?);
    let rows =
        Statement::cached(estimate_statement(backend, directory, &all, &words)).load::<EstimateRow>(conn)?;
    let mut terms: Vec<Term> =
        words.into_iter().map(|word| Term { word, sources: Vec::new(), entries: 0 }).collect();
    for row in rows.into_iter().filter(|row| row.entries > 0) {
        let source = usize::try_from(row.source).ok().and_then(|k| all.get(k));
        let term = usize::try_from(row.term).ok().and_then(|n| terms.get_mut(n));
        if let (Some(source), Some(term)) = (source, term) {
            term.sources.push(*source);
            term.entries += row.entries;
        }
    }
    Ok(terms)
}

/// The ids of the users with some value starting with the term's word: one index range per
/// source that holds such a value.
fn matching_ids(sql: &mut SqlFragment, directory: &DirectoryId, term: &Term) {
    for (n, source) in term.sources.iter().enumerate() {
        sql.push_sql(if n == 0 { "" } else { " UNION " });
        source_entries(sql, directory, *source, &term.word, None);
    }
}

/// ` AND (<the user row `alias` has a value starting with the term's word>)`, checked on the row
/// and, through the `user_values` primary key, its values, in the sources that hold such a value.
fn row_matches(sql: &mut SqlFragment, alias: &str, term: &Term) {
    // On PostgreSQL users.id is COLLATE "C" and user_values.user_id is not: compared as they are,
    // `v.user_id = u.id` takes "C" and cannot use the primary key (a table scan per row), and
    // the planner may turn the EXISTS into a hash of every value starting with the word. An
    // explicit collation and `OFFSET 0` (which it does not rewrite) make it one index probe a row.
    let (id_collation, fence) = match sql.backend {
        Backend::Postgres => (" COLLATE \"default\"", " OFFSET 0"),
        Backend::Sqlite => ("", ""),
    };
    sql.push_sql(" AND (");
    let mut first = true;
    let mut or = |sql: &mut SqlFragment| {
        sql.push_sql(if first { "" } else { " OR " });
        first = false;
    };
    for source in &term.sources {
        let column = match source {
            Source::UserName => "user_name_folded",
            Source::DisplayName => "display_name_folded",
            Source::Value(_) => continue,
        };
        or(sql);
        prefix_range(sql, &format!("{alias}.{column}"), &term.word);
    }
    let numbers: Vec<i32> = term
        .sources
        .iter()
        .filter_map(|source| match source {
            Source::Value(number) => Some(*number),
            Source::UserName | Source::DisplayName => None,
        })
        .collect();
    if !numbers.is_empty() {
        or(sql);
        sql.push_sql(&format!(
            "EXISTS (SELECT 1 FROM user_values v WHERE v.user_id = {alias}.id{id_collation} AND v.attr_id IN ("
        ));
        for (n, number) in numbers.iter().enumerate() {
            sql.push_sql(if n == 0 { "" } else { ", " });
            sql.push(SqlPart::Int(*number));
        }
        sql.push_sql(") AND ");
        prefix_range(sql, "v.value", &term.word);
        sql.push_sql(fence);
        sql.push_sql(")");
    }
    sql.push_sql(")");
}

/// People of the directory checked one by one in id order, at most [`SCAN_WINDOW`] of them.
fn window_statement(
    backend: Backend,
    directory: &DirectoryId,
    terms: &[Term],
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
    for term in terms {
        row_matches(&mut sql, "u", term);
    }
    sql.push_sql(" ORDER BY u.id LIMIT ");
    sql.push(SqlPart::BigInt(limit));
    sql
}

/// Everyone matching, collected from the indexes: the matches of the `driver` term (the one
/// with the fewest index entries), kept when their row and values match the other terms too.
/// `CROSS JOIN` keeps SQLite from walking the whole directory in id order and probing the
/// matches instead.
fn index_statement(
    backend: Backend,
    directory: &DirectoryId,
    terms: &[Term],
    driver: usize,
    after: Option<&str>,
    limit: i64,
    show_deactivated: bool,
) -> SqlFragment {
    let mut sql = SqlFragment::new(backend);
    sql.push_sql("SELECT users.id AS id FROM (");
    if let Some(term) = terms.get(driver) {
        matching_ids(&mut sql, directory, term);
    }
    sql.push_sql(") m CROSS JOIN users WHERE users.id = m.id AND users.directory_id = ");
    sql.push(SqlPart::Text(directory.0.clone()));
    for (n, term) in terms.iter().enumerate() {
        if n != driver {
            row_matches(&mut sql, "users", term);
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

/// The folded words of a query, each a prefix some searched attribute must start with: its
/// words, or, for a query without letters (a phone number, "+1 555 01"), the whole of it.
fn words(query: &str) -> Vec<String> {
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

/// The term the index search starts from: the fewest index entries, then the longest word.
fn driver(terms: &[Term]) -> usize {
    terms
        .iter()
        .enumerate()
        .min_by_key(|(n, t)| (t.entries, std::cmp::Reverse(t.word.chars().count()), *n))
        .map_or(0, |(n, _)| n)
}

fn load_ids(conn: &mut DbConn, statement: SqlFragment) -> Result<Vec<String>> {
    Ok(Statement::once(statement).load::<IdRow>(conn)?.into_iter().map(|r| r.id).collect())
}

/// Up to `limit` people matching `query` after id `after`, by id; deactivated ones only when
/// `show_deactivated`.
///
/// First each word's index entries are counted (capped, from the indexes alone): a word found
/// nowhere ends the search, and the sources where a word is found nowhere are left out of the
/// checks below. Common words match much of the directory: checking people in id order finds a
/// page after a few rows. Rare ones match few: collecting the matches of the rarest word from
/// its indexes, and checking those against the other words, is cheap. So a window of people in
/// order is checked first, unless the rarest word has fewer index entries than the window has
/// rows, and only when it holds less than a page are the matches collected from the indexes.
/// (On PostgreSQL the statements run in one read-committed transaction: a value written between
/// them may be missed by this one search, as if it had run a moment earlier.)
pub fn search(
    conn: &mut DbConn,
    directory: &DirectoryId,
    query: &str,
    after: Option<&str>,
    limit: i64,
    show_deactivated: bool,
) -> Result<Vec<Person>> {
    let backend = conn.backend();
    let words = words(query);
    let ids = if words.is_empty() {
        load_ids(conn, window_statement(backend, directory, &[], after, limit, show_deactivated))?
    } else {
        let terms = estimate(conn, backend, directory, words)?;
        if terms.iter().any(|t| t.sources.is_empty()) {
            return Ok(Vec::new());
        }
        let driver = driver(&terms);
        let rare = terms.get(driver).is_some_and(|t| t.entries < SCAN_WINDOW);
        let window = if rare {
            Vec::new()
        } else {
            load_ids(conn, window_statement(backend, directory, &terms, after, limit, show_deactivated))?
        };
        if (window.len() as i64) < limit {
            load_ids(
                conn,
                index_statement(backend, directory, &terms, driver, after, limit, show_deactivated),
            )?
        } else {
            window
        }
    };
    let mut rows: Vec<PersonColumns> = users::table
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
    use super::{driver, row_matches, words, Source, Term};
    use crate::store::filter_sql::SqlFragment;
    use crate::store::Backend;

    #[test]
    fn a_query_is_its_words_or_a_whole_phone_number() {
        assert_eq!(words("Maria  GA"), ["maria", "ga"]);
        assert_eq!(words("a b c d e f"), ["a", "b", "c", "d"]);
        assert_eq!(words(" +1  555 01 "), ["+1 555 01"]);
        assert_eq!(words("   "), Vec::<String>::new());
    }

    fn term(word: &str, entries: i64) -> Term {
        Term { word: word.into(), sources: vec![Source::UserName], entries }
    }

    #[test]
    fn the_index_search_starts_from_the_word_with_the_fewest_entries_then_the_longest() {
        let cases: [(&[Term], usize); 4] = [
            (&[term("maria", 4000), term("ga", 1000)], 1),
            (&[term("ga", 1000), term("maria", 4000)], 0),
            (&[term("ma", 9000), term("maria", 9000)], 1),
            (&[term("ab", 5), term("cd", 5)], 0),
        ];
        for (terms, expected) in cases {
            assert_eq!(driver(terms), expected, "{terms:?}");
        }
    }

    #[test]
    fn a_row_is_checked_only_in_the_sources_holding_the_word() {
        let term =
            Term { word: "ga".into(), sources: vec![Source::DisplayName, Source::Value(4)], entries: 7 };
        let mut sql = SqlFragment::new(Backend::Sqlite);
        row_matches(&mut sql, "u", &term);
        assert_eq!(
            sql.to_debug_string(),
            " AND (u.display_name_folded >= ? AND u.display_name_folded < ? OR EXISTS (SELECT 1 FROM \
             user_values v WHERE v.user_id = u.id AND v.attr_id IN (?) AND v.value >= ? AND v.value < ?))"
        );
        // PostgreSQL probes the user's values by primary key once per row (see row_matches).
        let mut sql = SqlFragment::new(Backend::Postgres);
        row_matches(&mut sql, "u", &Term { sources: vec![Source::Value(5)], ..term });
        assert_eq!(
            sql.to_debug_string(),
            " AND (EXISTS (SELECT 1 FROM user_values v WHERE v.user_id = u.id COLLATE \"default\" AND \
             v.attr_id IN (?) AND v.value >= ? AND v.value < ? OFFSET 0))"
        );
    }
}
