//! Sync runs: their history, and the staging of what a run read from its source. The engine
//! (`sync::engine`) stages pages as they arrive, then plans and applies from the stage in
//! batches, so a run's memory does not grow with the directory.

use std::collections::{BTreeSet, HashMap};

use diesel::prelude::*;
use serde_json::Value;

use super::schema::{
    connections, sync_runs, sync_stage_groups, sync_stage_members, sync_stage_subgroups, sync_stage_users,
    users,
};
use super::{now_millis, DbConn};
use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::scim::index::fold;
use crate::sync::source::MappedUser;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sync_runs)]
pub struct RunRow {
    pub id: String,
    pub connection_id: String,
    pub trigger: String,
    pub mode: String,
    pub dry_run: bool,
    pub status: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub report: String,
}

pub fn start(
    conn: &mut DbConn,
    connection_id: &str,
    trigger: &str,
    mode: &str,
    dry_run: bool,
) -> Result<String> {
    let row = RunRow {
        id: uuid::Uuid::now_v7().to_string(),
        connection_id: connection_id.to_string(),
        trigger: trigger.to_string(),
        mode: mode.to_string(),
        dry_run,
        status: "running".into(),
        started_at: now_millis(),
        finished_at: None,
        report: "{}".into(),
    };
    diesel::insert_into(sync_runs::table).values(&row).execute(conn)?;
    Ok(row.id)
}

/// Ends a run with its report; the stage is dropped. A successful full run moves the
/// connection's `last_full_at`.
pub fn finish(
    conn: &mut DbConn,
    run_id: &str,
    status: &str,
    mode: &str,
    report: &Value,
    full_succeeded: bool,
) -> Result<()> {
    let now = now_millis();
    diesel::update(sync_runs::table.find(run_id))
        .set((
            sync_runs::status.eq(status),
            sync_runs::mode.eq(mode),
            sync_runs::finished_at.eq(now),
            sync_runs::report.eq(report.to_string()),
        ))
        .execute(conn)?;
    if full_succeeded {
        let connection: String =
            sync_runs::table.find(run_id).select(sync_runs::connection_id).first(conn)?;
        diesel::update(connections::table.find(connection))
            .set(connections::last_full_at.eq(now))
            .execute(conn)?;
    }
    clear_stage(conn, run_id)
}

/// A run's staged rows, [`super::conn::ROWS_PER_DELETE`] at a time: a second full run of a
/// 100k org peaked at 193 MiB clearing them in one statement, and at 149-156 MiB in chunks.
const CLEAR_STAGED: [&str; 4] = [
    "DELETE FROM sync_stage_subgroups WHERE run_id = $1 AND (group_source_id, subgroup_source_id) IN \
     (SELECT group_source_id, subgroup_source_id FROM sync_stage_subgroups WHERE run_id = $1 LIMIT {limit})",
    "DELETE FROM sync_stage_members WHERE run_id = $1 AND (group_source_id, user_source_id) IN \
     (SELECT group_source_id, user_source_id FROM sync_stage_members WHERE run_id = $1 LIMIT {limit})",
    "DELETE FROM sync_stage_groups WHERE run_id = $1 AND source_id IN \
     (SELECT source_id FROM sync_stage_groups WHERE run_id = $1 LIMIT {limit})",
    "DELETE FROM sync_stage_users WHERE run_id = $1 AND source_id IN \
     (SELECT source_id FROM sync_stage_users WHERE run_id = $1 LIMIT {limit})",
];

/// Deletes everything a run staged.
pub fn clear_stage(conn: &mut DbConn, run_id: &str) -> Result<()> {
    clear_stage_by(conn, run_id, super::conn::ROWS_PER_DELETE)
}

/// [`clear_stage`], `per_statement` rows at a time (tests use small numbers).
pub fn clear_stage_by(conn: &mut DbConn, run_id: &str, per_statement: usize) -> Result<()> {
    for statement in CLEAR_STAGED {
        super::conn::delete_in_chunks(conn, statement, &[run_id], per_statement)?;
    }
    Ok(())
}

/// The runs of a connection, newest first.
pub fn list(conn: &mut DbConn, connection_id: &str, limit: i64) -> Result<Vec<RunRow>> {
    Ok(sync_runs::table
        .filter(sync_runs::connection_id.eq(connection_id))
        .order((sync_runs::started_at.desc(), sync_runs::id.desc()))
        .limit(limit)
        .select(RunRow::as_select())
        .load(conn)?)
}

/// When the connection's last successful run started (`None` before its first: that run is
/// always full). Dry runs never succeed, so they do not count.
pub fn last_success_started(conn: &mut DbConn, connection_id: &str) -> Result<Option<i64>> {
    Ok(sync_runs::table
        .filter(sync_runs::connection_id.eq(connection_id))
        .filter(sync_runs::status.eq("succeeded"))
        .select(diesel::dsl::max(sync_runs::started_at))
        .first::<Option<i64>>(conn)?)
}

/// The source ids of the users the connection's last successful run could not import because
/// another record held their userName: a delta run reads them again, since the holder may have
/// gone without the source reporting any change.
pub fn last_conflicts(conn: &mut DbConn, connection_id: &str) -> Result<Vec<String>> {
    let report: Option<String> = sync_runs::table
        .filter(sync_runs::connection_id.eq(connection_id))
        .filter(sync_runs::status.eq("succeeded"))
        .order(sync_runs::started_at.desc())
        .select(sync_runs::report)
        .first(conn)
        .optional()?;
    let Some(report) = report else { return Ok(Vec::new()) };
    let report: Value =
        serde_json::from_str(&report).map_err(|e| Error::internal("reading a run's report", e))?;
    Ok(report
        .get("conflicts")
        .and_then(Value::as_array)
        .map(|conflicts| {
            conflicts
                .iter()
                .filter(|c| c.get("userName").is_some())
                .filter_map(|c| c.get("source_id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// The scimd ids of the users a connection owns, by source id.
pub fn owned_ids(
    conn: &mut DbConn,
    connection_id: &str,
    source_ids: &[&str],
) -> Result<HashMap<String, String>> {
    let mut owned = HashMap::new();
    for chunk in source_ids.chunks(500) {
        let rows: Vec<(Option<String>, String)> = users::table
            .filter(users::source_connection.eq(connection_id))
            .filter(users::source_id.eq_any(chunk))
            .select((users::source_id, users::id))
            .load(conn)?;
        owned.extend(rows.into_iter().filter_map(|(source, id)| Some((source?, id))));
    }
    Ok(owned)
}

/// The displayName of each user among `source_ids` that the connection owns, by source id.
pub fn owned_display_names(
    conn: &mut DbConn,
    connection_id: &str,
    source_ids: &[&str],
) -> Result<HashMap<String, String>> {
    let mut names = HashMap::new();
    for chunk in source_ids.chunks(500) {
        let rows: Vec<(Option<String>, String)> = users::table
            .filter(users::source_connection.eq(connection_id))
            .filter(users::source_id.eq_any(chunk))
            .select((users::source_id, users::data))
            .load(conn)?;
        for (source, data) in rows {
            let resource: Value =
                serde_json::from_str(&data).map_err(|e| Error::internal("reading a stored user", e))?;
            if let (Some(source), Some(name)) = (source, resource.get("displayName").and_then(Value::as_str))
            {
                names.insert(source, name.to_string());
            }
        }
    }
    Ok(names)
}

/// Takes users out of the stage: a delta round may report a user again, or report it removed
/// after a change (the last report wins).
pub fn unstage_users(conn: &mut DbConn, run_id: &str, source_ids: &[&str]) -> Result<()> {
    for chunk in source_ids.chunks(500) {
        diesel::delete(
            sync_stage_users::table
                .filter(sync_stage_users::run_id.eq(run_id))
                .filter(sync_stage_users::source_id.eq_any(chunk)),
        )
        .execute(conn)?;
    }
    Ok(())
}

/// Stages a page of users, each with the scimd id it has or will get.
pub fn stage_users(conn: &mut DbConn, run_id: &str, connection_id: &str, page: &[MappedUser]) -> Result<()> {
    let ids: Vec<&str> = page.iter().map(|u| u.source_id.as_str()).collect();
    let owned = owned_ids(conn, connection_id, &ids)?;
    let mut rows = Vec::with_capacity(page.len());
    for user in page {
        let user_id = owned.get(&user.source_id).cloned().unwrap_or_else(|| UserId::generate().0);
        let data = serde_json::to_string(user).map_err(|e| Error::internal("staging a user", e))?;
        rows.push((
            sync_stage_users::run_id.eq(run_id),
            sync_stage_users::source_id.eq(user.source_id.as_str()),
            sync_stage_users::user_id.eq(user_id),
            sync_stage_users::user_name_folded.eq(user.user_name.as_deref().map(fold)),
            sync_stage_users::created.eq(user.created.as_str()),
            sync_stage_users::data.eq(data),
        ));
    }
    // Multi-row INSERT is backend-specific in diesel (no portable form through the enum); one
    // statement per 100 rows keeps below SQLite's bound-parameter limit.
    for chunk in rows.chunks(100) {
        let statement = diesel::insert_into(sync_stage_users::table).values(chunk);
        match conn {
            DbConn::Sqlite(c) => statement.execute(c)?,
            DbConn::Postgres(c) => statement.execute(c)?,
        };
    }
    Ok(())
}

/// A staged group as the source describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedGroup {
    pub source_id: String,
    pub name: String,
    pub group_type: String,
    /// Read from the source by this run; a delta run also stages the groups it did not re-read,
    /// copied from the connection's mirror (`source_mirror`), with `changed` false.
    pub changed: bool,
    /// Whether its members were read (only for groups the rules import or name).
    pub members_read: bool,
    /// Whether the rules import it (as its source's importer judged).
    pub imported: bool,
}

pub fn stage_groups(conn: &mut DbConn, run_id: &str, page: &[StagedGroup]) -> Result<()> {
    for group in page {
        diesel::insert_into(sync_stage_groups::table)
            .values((
                sync_stage_groups::run_id.eq(run_id),
                sync_stage_groups::source_id.eq(&group.source_id),
                sync_stage_groups::name.eq(&group.name),
                sync_stage_groups::group_type.eq(&group.group_type),
                sync_stage_groups::changed.eq(group.changed),
                sync_stage_groups::members_read.eq(group.members_read),
                sync_stage_groups::imported.eq(group.imported),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Stages users as members of a group. A member staged before is kept once: a Graph delta round
/// may report a member again (its replays).
pub fn stage_members(
    conn: &mut DbConn,
    run_id: &str,
    group_source_id: &str,
    user_source_ids: &[String],
) -> Result<()> {
    let rows: Vec<_> = user_source_ids
        .iter()
        .map(|user| {
            (
                sync_stage_members::run_id.eq(run_id),
                sync_stage_members::group_source_id.eq(group_source_id),
                sync_stage_members::user_source_id.eq(user.as_str()),
            )
        })
        .collect();
    for chunk in rows.chunks(300) {
        match conn {
            DbConn::Sqlite(c) => {
                diesel::insert_or_ignore_into(sync_stage_members::table).values(chunk).execute(c)?
            }
            DbConn::Postgres(c) => diesel::insert_into(sync_stage_members::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .execute(c)?,
        };
    }
    Ok(())
}

/// Stages the groups nested in a group whose members the run read: at any depth when read by
/// transitive listings, directly when read by a delta round (then [`flatten_staged_nesting`]).
/// One staged before is kept once.
pub fn stage_subgroups(
    conn: &mut DbConn,
    run_id: &str,
    group_source_id: &str,
    subgroup_source_ids: &[String],
) -> Result<()> {
    let rows: Vec<_> = subgroup_source_ids
        .iter()
        .map(|subgroup| {
            (
                sync_stage_subgroups::run_id.eq(run_id),
                sync_stage_subgroups::group_source_id.eq(group_source_id),
                sync_stage_subgroups::subgroup_source_id.eq(subgroup.as_str()),
            )
        })
        .collect();
    for chunk in rows.chunks(300) {
        match conn {
            DbConn::Sqlite(c) => {
                diesel::insert_or_ignore_into(sync_stage_subgroups::table).values(chunk).execute(c)?
            }
            DbConn::Postgres(c) => diesel::insert_into(sync_stage_subgroups::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .execute(c)?,
        };
    }
    Ok(())
}

/// Takes members (users or nested groups) out of a staged group: a delta round reported them
/// removed after it had reported them added.
pub fn unstage_members(
    conn: &mut DbConn,
    run_id: &str,
    group_source_id: &str,
    member_ids: &[String],
) -> Result<()> {
    for chunk in member_ids.chunks(500) {
        diesel::delete(
            sync_stage_members::table
                .filter(sync_stage_members::run_id.eq(run_id))
                .filter(sync_stage_members::group_source_id.eq(group_source_id))
                .filter(sync_stage_members::user_source_id.eq_any(chunk)),
        )
        .execute(conn)?;
        diesel::delete(
            sync_stage_subgroups::table
                .filter(sync_stage_subgroups::run_id.eq(run_id))
                .filter(sync_stage_subgroups::group_source_id.eq(group_source_id))
                .filter(sync_stage_subgroups::subgroup_source_id.eq_any(chunk)),
        )
        .execute(conn)?;
    }
    Ok(())
}

/// Every group nested in a staged group, at any depth (cycles end: each pair is kept once).
const REACHED_SUBGROUPS: &str = "WITH RECURSIVE reach (grp, sub) AS (
    SELECT group_source_id, subgroup_source_id FROM sync_stage_subgroups WHERE run_id = $1
    UNION
    SELECT reach.grp, s.subgroup_source_id FROM reach
    JOIN sync_stage_subgroups s ON s.run_id = $1 AND s.group_source_id = reach.sub
)
INSERT INTO sync_stage_subgroups (run_id, group_source_id, subgroup_source_id)
SELECT $1, grp, sub FROM reach WHERE grp <> sub
ON CONFLICT DO NOTHING";

/// The users of every group nested in a staged group are its members too.
const MEMBERS_OF_SUBGROUPS: &str = "INSERT INTO sync_stage_members (run_id, group_source_id, user_source_id)
SELECT $1, s.group_source_id, m.user_source_id FROM sync_stage_subgroups s
JOIN sync_stage_members m ON m.run_id = $1 AND m.group_source_id = s.subgroup_source_id
WHERE s.run_id = $1
ON CONFLICT DO NOTHING";

/// Flattens nested groups in a stage that holds direct members (a Graph delta round's): each
/// group gets the groups nested in it at any depth, and their users, as the transitive listing
/// of each group would give. Then the staged members of `unread` (groups the rules neither
/// import nor name) are dropped: they were needed only to flatten.
pub fn flatten_staged_nesting(conn: &mut DbConn, run_id: &str, unread: &[&str]) -> Result<()> {
    for statement in [REACHED_SUBGROUPS, MEMBERS_OF_SUBGROUPS] {
        super::conn::execute_numbered(conn, statement, &[run_id])?;
    }
    // A group at a time, ROWS_PER_DELETE rows a statement: a group may hold most of the tenant,
    // and an allow-list that names few groups drops most rows. Built with diesel, the two
    // statements are prepared once for all groups, not once per group as SQL text would be.
    let per_statement = super::conn::ROWS_PER_DELETE;
    let limit = i64::try_from(per_statement).unwrap_or(i64::MAX);
    for group in unread {
        super::conn::repeat_while_full(per_statement, || {
            let chosen = diesel::alias!(sync_stage_members as chosen);
            let users = chosen
                .filter(chosen.field(sync_stage_members::run_id).eq(run_id))
                .filter(chosen.field(sync_stage_members::group_source_id).eq(group))
                .select(chosen.field(sync_stage_members::user_source_id))
                .limit(limit);
            Ok(diesel::delete(
                sync_stage_members::table
                    .filter(sync_stage_members::run_id.eq(run_id))
                    .filter(sync_stage_members::group_source_id.eq(group))
                    .filter(sync_stage_members::user_source_id.eq_any(users)),
            )
            .execute(&mut *conn)?)
        })?;
        super::conn::repeat_while_full(per_statement, || {
            let chosen = diesel::alias!(sync_stage_subgroups as chosen);
            let subgroups = chosen
                .filter(chosen.field(sync_stage_subgroups::run_id).eq(run_id))
                .filter(chosen.field(sync_stage_subgroups::group_source_id).eq(group))
                .select(chosen.field(sync_stage_subgroups::subgroup_source_id))
                .limit(limit);
            Ok(diesel::delete(
                sync_stage_subgroups::table
                    .filter(sync_stage_subgroups::run_id.eq(run_id))
                    .filter(sync_stage_subgroups::group_source_id.eq(group))
                    .filter(sync_stage_subgroups::subgroup_source_id.eq_any(subgroups)),
            )
            .execute(&mut *conn)?)
        })?;
    }
    Ok(())
}

pub fn staged_groups(conn: &mut DbConn, run_id: &str) -> Result<Vec<StagedGroup>> {
    Ok(sync_stage_groups::table
        .filter(sync_stage_groups::run_id.eq(run_id))
        .order(sync_stage_groups::source_id.asc())
        .select((
            sync_stage_groups::source_id,
            sync_stage_groups::name,
            sync_stage_groups::group_type,
            sync_stage_groups::changed,
            sync_stage_groups::members_read,
            sync_stage_groups::imported,
        ))
        .load::<(String, String, String, bool, bool, bool)>(conn)?
        .into_iter()
        .map(|(source_id, name, group_type, changed, members_read, imported)| StagedGroup {
            source_id,
            name,
            group_type,
            changed,
            members_read,
            imported,
        })
        .collect())
}

/// A staged user with the scimd id it has or will get.
#[derive(Debug, Clone)]
pub struct StagedUser {
    pub user_id: String,
    pub user: MappedUser,
}

/// The next batch of staged users after `after` (a source id), in source-id order.
pub fn staged_users(
    conn: &mut DbConn,
    run_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<StagedUser>> {
    let mut query = sync_stage_users::table.filter(sync_stage_users::run_id.eq(run_id)).into_boxed();
    if let Some(after) = after {
        query = query.filter(sync_stage_users::source_id.gt(after));
    }
    let rows: Vec<(String, String)> = query
        .order(sync_stage_users::source_id.asc())
        .limit(limit)
        .select((sync_stage_users::user_id, sync_stage_users::data))
        .load(conn)?;
    rows.into_iter()
        .map(|(user_id, data)| {
            let user = serde_json::from_str(&data).map_err(|e| Error::internal("a staged user", e))?;
            Ok(StagedUser { user_id, user })
        })
        .collect()
}

/// What decides whether a staged user will be created, without its resource: a batch names a
/// few hundred managers, and parsing each one's whole staged record was most of the time a
/// 100k import spent deciding (3.7 of 6 s).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct StagedFacts {
    pub source_id: String,
    pub status: crate::sync::source::SourceStatus,
    pub user_name: Option<String>,
    pub primary_email: String,
}

/// [`StagedFacts`] of the staged users among `source_ids`, each with the scimd id it has or
/// will get.
pub fn staged_facts(
    conn: &mut DbConn,
    run_id: &str,
    source_ids: &[&str],
) -> Result<Vec<(String, StagedFacts)>> {
    let mut staged = Vec::new();
    for chunk in source_ids.chunks(500) {
        let rows: Vec<(String, String)> = sync_stage_users::table
            .filter(sync_stage_users::run_id.eq(run_id))
            .filter(sync_stage_users::source_id.eq_any(chunk))
            .select((sync_stage_users::user_id, sync_stage_users::data))
            .load(conn)?;
        for (user_id, data) in rows {
            let facts = serde_json::from_str(&data).map_err(|e| Error::internal("a staged user", e))?;
            staged.push((user_id, facts));
        }
    }
    Ok(staged)
}

/// The staged groups each of `user_source_ids` is a member of, as (group source id, name).
pub fn groups_of(
    conn: &mut DbConn,
    run_id: &str,
    user_source_ids: &[&str],
) -> Result<HashMap<String, Vec<(String, String)>>> {
    let rows: Vec<(String, String, String)> = sync_stage_members::table
        .inner_join(
            sync_stage_groups::table.on(sync_stage_groups::run_id
                .eq(sync_stage_members::run_id)
                .and(sync_stage_groups::source_id.eq(sync_stage_members::group_source_id))),
        )
        .filter(sync_stage_members::run_id.eq(run_id))
        .filter(sync_stage_members::user_source_id.eq_any(user_source_ids))
        .select((sync_stage_members::user_source_id, sync_stage_groups::source_id, sync_stage_groups::name))
        .load(conn)?;
    let mut by_user: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (user, group, name) in rows {
        by_user.entry(user).or_default().push((group, name));
    }
    Ok(by_user)
}

/// Staged users who lose a userName collision among themselves (rule 4: the oldest by
/// `created`, then id, keeps it), with the source id of the one who keeps it.
pub fn collision_losers(conn: &mut DbConn, run_id: &str) -> Result<HashMap<String, String>> {
    let shared: Vec<String> = sync_stage_users::table
        .filter(sync_stage_users::run_id.eq(run_id))
        .filter(sync_stage_users::user_name_folded.is_not_null())
        .group_by(sync_stage_users::user_name_folded)
        .having(diesel::dsl::count_star().gt(1))
        .select(sync_stage_users::user_name_folded.assume_not_null())
        .load(conn)?;
    let mut losers = HashMap::new();
    for chunk in shared.chunks(500) {
        let mut rows: Vec<(Option<String>, String, String)> = sync_stage_users::table
            .filter(sync_stage_users::run_id.eq(run_id))
            .filter(sync_stage_users::user_name_folded.eq_any(chunk))
            .select((
                sync_stage_users::user_name_folded,
                sync_stage_users::created,
                sync_stage_users::source_id,
            ))
            .load(conn)?;
        rows.sort();
        let mut winner_of: HashMap<Option<String>, String> = HashMap::new();
        for (name, _, source_id) in rows {
            match winner_of.get(&name) {
                Some(winner) => {
                    losers.insert(source_id, winner.clone());
                }
                None => {
                    winner_of.insert(name, source_id);
                }
            }
        }
    }
    Ok(losers)
}

/// Live users of the directory holding any of `folded` userNames, as folded name → (id,
/// owning connection).
pub fn name_holders(
    conn: &mut DbConn,
    directory_id: &str,
    folded: &[String],
) -> Result<HashMap<String, (String, Option<String>)>> {
    let rows: Vec<(String, String, Option<String>)> = users::table
        .filter(users::directory_id.eq(directory_id))
        .filter(users::deprovisioned_at.is_null())
        .filter(users::user_name_folded.eq_any(folded))
        .select((users::user_name_folded, users::id, users::source_connection))
        .load(conn)?;
    Ok(rows.into_iter().map(|(name, id, source)| (name, (id, source))).collect())
}

/// Active users the connection owns that the run did not see (full runs: they vanished).
pub fn vanished_active(
    conn: &mut DbConn,
    connection_id: &str,
    run_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<String>> {
    let seen = sync_stage_users::table
        .filter(sync_stage_users::run_id.eq(run_id))
        .select(sync_stage_users::source_id);
    let mut query = users::table
        .filter(users::source_connection.eq(connection_id))
        .filter(users::deprovisioned_at.is_null())
        .filter(users::active.eq(true))
        .filter(users::source_id.assume_not_null().ne_all(seen))
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(users::id.gt(after));
    }
    Ok(query.order(users::id.asc()).limit(limit).select(users::id).load(conn)?)
}

/// How many live users the connection owns are active (the brake's base).
pub fn active_owned(conn: &mut DbConn, connection_id: &str) -> Result<i64> {
    Ok(users::table
        .filter(users::source_connection.eq(connection_id))
        .filter(users::deprovisioned_at.is_null())
        .filter(users::active.eq(true))
        .count()
        .get_result(conn)?)
}

/// The source ids of the members of a staged group.
pub fn staged_member_ids(conn: &mut DbConn, run_id: &str, group_source_id: &str) -> Result<BTreeSet<String>> {
    Ok(sync_stage_members::table
        .filter(sync_stage_members::run_id.eq(run_id))
        .filter(sync_stage_members::group_source_id.eq(group_source_id))
        .select(sync_stage_members::user_source_id)
        .load::<String>(conn)?
        .into_iter()
        .collect())
}

/// The scimd ids staged users have in this run, by source id.
pub fn staged_ids(conn: &mut DbConn, run_id: &str, source_ids: &[&str]) -> Result<HashMap<String, String>> {
    let mut ids = HashMap::new();
    for chunk in source_ids.chunks(500) {
        let rows: Vec<(String, String)> = sync_stage_users::table
            .filter(sync_stage_users::run_id.eq(run_id))
            .filter(sync_stage_users::source_id.eq_any(chunk))
            .select((sync_stage_users::source_id, sync_stage_users::user_id))
            .load(conn)?;
        ids.extend(rows);
    }
    Ok(ids)
}

/// Creates imported users with their planned ids, as the connection's, in one batch (at most
/// `users::MAX_NEW_USERS`). A userName taken meanwhile (by SCIM push, say) fails only its own
/// user: the batch is then written one user at a time. Returns the source ids of the users that
/// failed so, with the error.
pub fn import_users(
    conn: &mut DbConn,
    registry: &crate::scim::schema::Registry,
    directory: &crate::ids::DirectoryId,
    actor: &super::audit::Actor,
    users: &[super::users::NewUser],
) -> Result<Vec<(String, Error)>> {
    let insert = |c: &mut DbConn, users: &[super::users::NewUser]| {
        super::users::insert_many(c, registry, directory, actor, users).map(drop)
    };
    match alone(conn, |c| insert(c, users)) {
        Ok(()) => return Ok(Vec::new()),
        Err(Error::Uniqueness(_)) if users.len() > 1 => {}
        Err(Error::Uniqueness(message)) => {
            let source = users.first().and_then(|u| u.source_id()).unwrap_or_default().to_string();
            return Ok(vec![(source, Error::Uniqueness(message))]);
        }
        Err(other) => return Err(other),
    }
    let mut failed = Vec::new();
    for user in users {
        match alone(conn, |c| insert(c, std::slice::from_ref(user))) {
            Ok(()) => {}
            Err(error @ Error::Uniqueness(_)) => {
                failed.push((user.source_id().unwrap_or_default().to_string(), error))
            }
            Err(other) => return Err(other),
        }
    }
    Ok(failed)
}

/// Runs imported records' writes so that a userName taken meanwhile fails them alone.
/// PostgreSQL aborts the whole transaction at a failed statement, so there they run in a
/// savepoint. SQLite undoes only the failed statement, and the one statement that fails this way
/// is the records' first write (their users rows, in one statement), so none is needed; one
/// would copy every page the records touch to a sub-journal first, which was most of a large
/// import's time.
fn alone(conn: &mut DbConn, writes: impl FnOnce(&mut DbConn) -> Result<()>) -> Result<()> {
    match conn {
        DbConn::Sqlite(_) => writes(conn),
        DbConn::Postgres(_) => conn.transaction(writes),
    }
}

/// Replaces an imported user's attributes; a userName taken meanwhile fails this user alone.
pub fn update_imported_user(
    conn: &mut DbConn,
    registry: &crate::scim::schema::Registry,
    directory: &crate::ids::DirectoryId,
    actor: &super::audit::Actor,
    user_id: &str,
    resource: crate::scim::resource::Stored,
) -> Result<()> {
    alone(conn, |c| {
        super::users::modify(c, registry, directory, actor, user_id, None, move |_| Ok(resource)).map(|_| ())
    })
}

/// Creates an imported group with its members and marks it as the connection's, in a savepoint.
pub fn import_group(
    conn: &mut DbConn,
    directory: &crate::ids::DirectoryId,
    actor: &super::audit::Actor,
    connection_id: &str,
    source_id: &str,
    resource: crate::scim::resource::Stored,
    members: BTreeSet<String>,
) -> Result<()> {
    conn.transaction(|c| {
        let created = super::groups::insert(c, directory, actor, resource, members)?;
        super::groups::claim(c, &created.meta.id, connection_id, source_id)
    })
}

impl super::Store {
    /// The latest runs of a connection (404 for an unknown connection).
    pub async fn connection_runs(&self, connection_id: String) -> Result<Vec<RunRow>> {
        self.read(move |conn, _| {
            super::connections::get(conn, &connection_id)?;
            list(conn, &connection_id, 50)
        })
        .await
    }
}
