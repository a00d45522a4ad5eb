//! What a connection last read of its source's groups and memberships (`sync_source_groups`,
//! `sync_source_members`; for Entra also the groups nested in each, `sync_source_subgroups`), and where its next delta run starts (`connections.delta_state`).
//!
//! A delta run re-reads only the groups that changed. To judge the allow/deny rules for the
//! users it stages, and to set the members of groups it did not re-read, it takes the rest from
//! this mirror. The mirror moves only with a successful run, in the transaction that ends it, so
//! a run that fails, brakes or is cut short leaves it as the last good run saw the source.

use std::collections::{BTreeSet, HashSet};

use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

use super::schema::{
    connections, sync_source_groups, sync_source_members, sync_source_subgroups, sync_stage_groups,
    sync_stage_members, sync_stage_users,
};
use super::sync_runs::StagedGroup;
use super::DbConn;
use crate::error::Result;

/// A group as the last successful run saw it: its name and whether its members were read.
pub fn find_group(conn: &mut DbConn, connection_id: &str, source_id: &str) -> Result<Option<(String, bool)>> {
    Ok(sync_source_groups::table
        .find((connection_id, source_id))
        .select((sync_source_groups::name, sync_source_groups::members_read))
        .first(conn)
        .optional()?)
}

/// The members of a group as the last successful run read them.
pub fn members(conn: &mut DbConn, connection_id: &str, group_source_id: &str) -> Result<BTreeSet<String>> {
    Ok(sync_source_members::table
        .filter(sync_source_members::connection_id.eq(connection_id))
        .filter(sync_source_members::group_source_id.eq(group_source_id))
        .select(sync_source_members::user_source_id)
        .load::<String>(conn)?
        .into_iter()
        .collect())
}

/// The groups, as the last successful run saw them, in which any of `source_ids` is nested (at
/// any depth): their members change when a nested group's do, though the source reports the
/// change on the nested group alone. Marked `changed`, as the run is to read them again.
pub fn groups_nesting(
    conn: &mut DbConn,
    connection_id: &str,
    source_ids: &[&str],
) -> Result<Vec<StagedGroup>> {
    let mut found = Vec::new();
    for chunk in source_ids.chunks(500) {
        let nesting = sync_source_subgroups::table
            .filter(sync_source_subgroups::connection_id.eq(connection_id))
            .filter(sync_source_subgroups::subgroup_source_id.eq_any(chunk))
            .select(sync_source_subgroups::group_source_id);
        let rows: Vec<(String, String, String, bool, bool)> = sync_source_groups::table
            .filter(sync_source_groups::connection_id.eq(connection_id))
            .filter(sync_source_groups::source_id.eq_any(nesting))
            .select((
                sync_source_groups::source_id,
                sync_source_groups::name,
                sync_source_groups::group_type,
                sync_source_groups::members_read,
                sync_source_groups::imported,
            ))
            .load(conn)?;
        found.extend(rows.into_iter().map(|(source_id, name, group_type, members_read, imported)| {
            StagedGroup { source_id, name, group_type, changed: true, members_read, imported }
        }));
    }
    found.sort_by(|a, b| a.source_id.cmp(&b.source_id));
    found.dedup_by(|a, b| a.source_id == b.source_id);
    Ok(found)
}

/// Completes a delta run's stage from the mirror: every group it did not read from the source
/// (as not `changed`), and, for each user it staged, that user's memberships of those groups.
/// The stage then holds what a full run would have staged for these users.
pub fn complete_stage(conn: &mut DbConn, connection_id: &str, run_id: &str) -> Result<()> {
    let read_groups = sync_stage_groups::table
        .filter(sync_stage_groups::run_id.eq(run_id))
        .select(sync_stage_groups::source_id);
    diesel::insert_into(sync_stage_groups::table)
        .values(
            sync_source_groups::table
                .filter(sync_source_groups::connection_id.eq(connection_id))
                .filter(sync_source_groups::source_id.ne_all(read_groups))
                .select((
                    run_id.into_sql::<Text>(),
                    sync_source_groups::source_id,
                    sync_source_groups::name,
                    sync_source_groups::group_type,
                    false.into_sql::<Bool>(),
                    sync_source_groups::members_read,
                    sync_source_groups::imported,
                )),
        )
        .into_columns((
            sync_stage_groups::run_id,
            sync_stage_groups::source_id,
            sync_stage_groups::name,
            sync_stage_groups::group_type,
            sync_stage_groups::changed,
            sync_stage_groups::members_read,
            sync_stage_groups::imported,
        ))
        .execute(conn)?;
    let staged_users = sync_stage_users::table
        .filter(sync_stage_users::run_id.eq(run_id))
        .select(sync_stage_users::source_id);
    let changed_groups = sync_stage_groups::table
        .filter(sync_stage_groups::run_id.eq(run_id))
        .filter(sync_stage_groups::changed.eq(true))
        .select(sync_stage_groups::source_id);
    diesel::insert_into(sync_stage_members::table)
        .values(
            sync_source_members::table
                .filter(sync_source_members::connection_id.eq(connection_id))
                .filter(sync_source_members::user_source_id.eq_any(staged_users))
                .filter(sync_source_members::group_source_id.ne_all(changed_groups))
                .select((
                    run_id.into_sql::<Text>(),
                    sync_source_members::group_source_id,
                    sync_source_members::user_source_id,
                )),
        )
        .into_columns((
            sync_stage_members::run_id,
            sync_stage_members::group_source_id,
            sync_stage_members::user_source_id,
        ))
        .execute(conn)?;
    Ok(())
}

/// The groups (by source id) of the staged users the connection does not own yet: besides the
/// groups it re-read, a delta run must set the members of these, as their new members get ids
/// only in this run. Costs the number of staged users.
pub fn groups_of_new_users(conn: &mut DbConn, connection_id: &str, run_id: &str) -> Result<HashSet<String>> {
    let staged: Vec<String> = sync_stage_users::table
        .filter(sync_stage_users::run_id.eq(run_id))
        .select(sync_stage_users::source_id)
        .load(conn)?;
    let refs: Vec<&str> = staged.iter().map(String::as_str).collect();
    let owned = super::sync_runs::owned_ids(conn, connection_id, &refs)?;
    let new: Vec<&str> = refs.into_iter().filter(|source| !owned.contains_key(*source)).collect();
    let mut groups = HashSet::new();
    for chunk in new.chunks(500) {
        groups.extend(
            sync_stage_members::table
                .filter(sync_stage_members::run_id.eq(run_id))
                .filter(sync_stage_members::user_source_id.eq_any(chunk))
                .select(sync_stage_members::group_source_id)
                .distinct()
                .load::<String>(conn)?,
        );
    }
    Ok(groups)
}

/// The staged rows of the groups a run read ($2) whose members it read, joined to their group.
macro_rules! read_members_of {
    ($stage:literal) => {
        concat!(
            "FROM ",
            $stage,
            " s JOIN sync_stage_groups g ON g.run_id = s.run_id AND g.source_id = s.group_source_id \
             WHERE s.run_id = $2 AND g.changed AND g.members_read"
        )
    };
}

/// Mirrored memberships of a connection ($1) that a full run ($2) did not read, `{limit}` at a
/// time (see [`super::conn::delete_in_chunks`]): narrowing the allow-list drops most of them.
const FULL_MEMBERS_GONE: &str = concat!(
    "DELETE FROM sync_source_members WHERE connection_id = $1 AND (group_source_id, user_source_id) IN \
     (SELECT m.group_source_id, m.user_source_id FROM sync_source_members m \
     WHERE m.connection_id = $1 AND NOT EXISTS (SELECT 1 ",
    read_members_of!("sync_stage_members"),
    " AND s.user_source_id = m.user_source_id AND s.group_source_id = m.group_source_id) LIMIT {limit})"
);

/// [`FULL_MEMBERS_GONE`] for nested groups.
const FULL_SUBGROUPS_GONE: &str = concat!(
    "DELETE FROM sync_source_subgroups WHERE connection_id = $1 AND (group_source_id, subgroup_source_id) IN \
     (SELECT m.group_source_id, m.subgroup_source_id FROM sync_source_subgroups m \
     WHERE m.connection_id = $1 AND NOT EXISTS (SELECT 1 ",
    read_members_of!("sync_stage_subgroups"),
    " AND s.subgroup_source_id = m.subgroup_source_id AND s.group_source_id = m.group_source_id) LIMIT {limit})"
);

/// The memberships a run ($2) read that the connection's ($1) mirror lacks.
const MEMBERS_READ: &str = concat!(
    "INSERT INTO sync_source_members (connection_id, group_source_id, user_source_id) \
     SELECT $1, s.group_source_id, s.user_source_id ",
    read_members_of!("sync_stage_members"),
    " ON CONFLICT DO NOTHING"
);

/// [`MEMBERS_READ`] for nested groups.
const SUBGROUPS_READ: &str = concat!(
    "INSERT INTO sync_source_subgroups (connection_id, group_source_id, subgroup_source_id) \
     SELECT $1, s.group_source_id, s.subgroup_source_id ",
    read_members_of!("sync_stage_subgroups"),
    " ON CONFLICT DO NOTHING"
);

/// Moves the mirror to what a successful run read, and the next delta run's start to
/// `watermark`. A full run replaces the mirror (groups it did not see are gone from the source);
/// a delta run replaces only the groups it read.
pub fn advance(
    conn: &mut DbConn,
    connection_id: &str,
    run_id: &str,
    full: bool,
    watermark: Option<&str>,
) -> Result<()> {
    let read_groups = || {
        sync_stage_groups::table
            .filter(sync_stage_groups::run_id.eq(run_id))
            .filter(sync_stage_groups::changed.eq(true))
            .select(sync_stage_groups::source_id)
    };
    let mirror_members =
        sync_source_members::table.filter(sync_source_members::connection_id.eq(connection_id));
    let mirror_groups = sync_source_groups::table.filter(sync_source_groups::connection_id.eq(connection_id));
    let mirror_subgroups =
        sync_source_subgroups::table.filter(sync_source_subgroups::connection_id.eq(connection_id));
    if full {
        diesel::delete(mirror_groups).execute(conn)?;
    } else {
        diesel::delete(mirror_members.filter(sync_source_members::group_source_id.eq_any(read_groups())))
            .execute(conn)?;
        diesel::delete(mirror_subgroups.filter(sync_source_subgroups::group_source_id.eq_any(read_groups())))
            .execute(conn)?;
        diesel::delete(mirror_groups.filter(sync_source_groups::source_id.eq_any(read_groups())))
            .execute(conn)?;
    }
    diesel::insert_into(sync_source_groups::table)
        .values(
            sync_stage_groups::table
                .filter(sync_stage_groups::run_id.eq(run_id))
                .filter(sync_stage_groups::changed.eq(true))
                .select((
                    connection_id.into_sql::<Text>(),
                    sync_stage_groups::source_id,
                    sync_stage_groups::name,
                    sync_stage_groups::group_type,
                    sync_stage_groups::members_read,
                    sync_stage_groups::imported,
                )),
        )
        .into_columns((
            sync_source_groups::connection_id,
            sync_source_groups::source_id,
            sync_source_groups::name,
            sync_source_groups::group_type,
            sync_source_groups::members_read,
            sync_source_groups::imported,
        ))
        .execute(conn)?;
    // The members (and nested groups) of the groups the run read take the place of the mirror's:
    // for a full run all of it, by difference, so that a run that read what the mirror holds
    // writes nothing there (deleting and writing back a 100k org's 305k memberships held ~110
    // MiB in SQLite's cache until the commit); for a delta run those of the groups it re-read,
    // whose old rows are gone above.
    if full {
        for statement in [FULL_MEMBERS_GONE, FULL_SUBGROUPS_GONE] {
            let chunk = super::conn::ROWS_PER_DELETE;
            super::conn::delete_in_chunks(conn, statement, &[connection_id, run_id], chunk)?;
        }
    }
    for statement in [MEMBERS_READ, SUBGROUPS_READ] {
        super::conn::execute_numbered(conn, statement, &[connection_id, run_id])?;
    }
    if let Some(watermark) = watermark {
        diesel::update(connections::table.find(connection_id))
            .set(connections::delta_state.eq(watermark))
            .execute(conn)?;
    }
    Ok(())
}
