//! Leases on connections: one run per connection at a time, across every instance sharing the
//! database. A run takes its connection's lease in the transaction that records it
//! (`sync::engine::start`), its instance renews it while the run executes, and gives it back in
//! the transaction that ends the run. A lease not renewed within its TTL belongs to an instance
//! that stopped (crash, `kill -9`, a lost host): the next run takes it over and ends the run left
//! behind as `failed`, so the history never shows a run that stays `running`.
//!
//! Expiry compares the clocks of the instances: they must agree to well within the TTL (NTP).

use std::time::Duration;

use diesel::prelude::*;
use serde_json::json;

use super::schema::{connections, sync_leases, sync_runs};
use super::{now_millis, DbConn, Store};
use crate::error::{Error, Result};
use crate::scim::index::format_millis;

/// How long a lease lasts without renewal unless configured (`sync.lease_ttl_secs`).
pub const DEFAULT_TTL_MS: i64 = 120_000;

/// The terms on which this instance holds leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTerms {
    /// Who holds the leases it takes: host and process, with a tag that tells apart two stores
    /// of one process. Shown to the operator; renewals go by run id.
    pub holder: String,
    /// How long a lease lasts without renewal, in milliseconds.
    pub ttl_ms: i64,
}

impl LeaseTerms {
    pub fn new(ttl_ms: i64) -> LeaseTerms {
        LeaseTerms { holder: instance_name(), ttl_ms: ttl_ms.max(1) }
    }

    /// How often the holder renews: a third of the TTL, so that one renewal may fail (a slow
    /// database) without the lease lapsing.
    pub fn renew_every(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.ttl_ms / 3).unwrap_or(1).max(1))
    }
}

/// `host pid 1234 #1a2b3c4d`: enough for an operator to find the instance.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown host".to_string());
    let tag = (uuid::Uuid::new_v4().as_u128() >> 96) as u32;
    format!("{host} pid {} #{tag:08x}", std::process::id())
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = sync_leases)]
pub struct LeaseRow {
    pub connection_id: String,
    pub holder: String,
    pub run_id: String,
    pub acquired_at: i64,
    pub expires_at: i64,
}

pub fn find(conn: &mut DbConn, connection_id: &str) -> Result<Option<LeaseRow>> {
    Ok(sync_leases::table.find(connection_id).select(LeaseRow::as_select()).first(conn).optional()?)
}

/// Takes the lease of connection `connection_id` (named `name` in messages) for `run_id`.
/// While another run holds it and its instance renews it, refused with `Conflict` naming that
/// run and since when. A lapsed lease is taken over: the run it was held for, if still
/// `running`, ends `failed` with the reason; its id is returned.
pub fn acquire(
    conn: &mut DbConn,
    connection_id: &str,
    name: &str,
    run_id: &str,
    terms: &LeaseTerms,
    now: i64,
) -> Result<Option<String>> {
    let lease = LeaseRow {
        connection_id: connection_id.to_string(),
        holder: terms.holder.clone(),
        run_id: run_id.to_string(),
        acquired_at: now,
        expires_at: now.saturating_add(terms.ttl_ms),
    };
    match find(conn, connection_id)? {
        None => {
            // Two instances may insert at once: the primary key lets one through (on PostgreSQL
            // the other waits for its commit). A savepoint keeps the loser's transaction usable
            // to say who won.
            let inserted = conn.transaction(|c| {
                diesel::insert_into(sync_leases::table).values(&lease).execute(c).map_err(Error::from)
            });
            match inserted {
                Ok(_) => Ok(None),
                Err(Error::Uniqueness(_)) => Err(refusal(conn, connection_id, name)?),
                Err(other) => Err(other),
            }
        }
        Some(held) if held.expires_at > now => Err(busy(name, &held)),
        Some(lapsed) => {
            // Only the lease as read is taken over: if another instance took it meanwhile, its
            // update changed the row and this one matches nothing.
            let taken = diesel::update(
                sync_leases::table
                    .find(connection_id)
                    .filter(sync_leases::run_id.eq(&lapsed.run_id))
                    .filter(sync_leases::expires_at.eq(lapsed.expires_at)),
            )
            .set((
                sync_leases::holder.eq(&lease.holder),
                sync_leases::run_id.eq(&lease.run_id),
                sync_leases::acquired_at.eq(lease.acquired_at),
                sync_leases::expires_at.eq(lease.expires_at),
            ))
            .execute(conn)?;
            if taken == 0 {
                return Err(refusal(conn, connection_id, name)?);
            }
            abandon(conn, &lapsed, now)
        }
    }
}

/// Gives back a lapsed lease of the connection, ending the run it was held for as `failed`
/// (see [`acquire`]); returns that run's id. The scheduler calls it on every round, so that a
/// crashed instance's run shows as failed within a TTL even when no run is due.
pub fn reap_lapsed(conn: &mut DbConn, connection_id: &str, now: i64) -> Result<Option<String>> {
    let Some(lapsed) = find(conn, connection_id)?.filter(|lease| lease.expires_at <= now) else {
        return Ok(None);
    };
    let reaped = diesel::delete(
        sync_leases::table
            .find(connection_id)
            .filter(sync_leases::run_id.eq(&lapsed.run_id))
            .filter(sync_leases::expires_at.eq(lapsed.expires_at)),
    )
    .execute(conn)?;
    if reaped == 0 {
        return Ok(None);
    }
    abandon(conn, &lapsed, now)
}

/// Why a lease is not free, after losing a race for it.
fn refusal(conn: &mut DbConn, connection_id: &str, name: &str) -> Result<Error> {
    Ok(match find(conn, connection_id)? {
        Some(held) => busy(name, &held),
        None => Error::Conflict(format!(
            "another run of the connection '{name}' started at the same moment; see its runs, then try again"
        )),
    })
}

fn busy(name: &str, held: &LeaseRow) -> Error {
    Error::Conflict(format!(
        "the connection '{name}' is already syncing: run {} has been running since {} on {}; wait for it to \
         end (its runs show when), then try again. Should that instance have stopped, its lease lapses at {} \
         and the next run takes over",
        held.run_id,
        format_millis(held.acquired_at),
        held.holder,
        format_millis(held.expires_at)
    ))
}

/// Ends the run a lapsed lease was held for, unless it ended (its instance stopped between the
/// end and giving the lease back cannot happen: both are one transaction).
fn abandon(conn: &mut DbConn, lapsed: &LeaseRow, now: i64) -> Result<Option<String>> {
    let run: Option<(String, String)> = sync_runs::table
        .find(&lapsed.run_id)
        .select((sync_runs::status, sync_runs::mode))
        .first(conn)
        .optional()?;
    let Some((status, mode)) = run else { return Ok(None) };
    if status != "running" {
        return Ok(None);
    }
    let error = format!(
        "the scimd instance running this run ({}) stopped: it crashed, was killed or lost the database, and \
         its lease lapsed at {}. What the run applied before it stopped is kept; the next run completes it",
        lapsed.holder,
        format_millis(lapsed.expires_at)
    );
    let report = json!({
        "run_id": lapsed.run_id, "status": "failed", "mode": mode,
        "conflicts": [], "warnings": [], "error": error,
    });
    diesel::update(sync_runs::table.find(&lapsed.run_id))
        .set((
            sync_runs::status.eq("failed"),
            sync_runs::finished_at.eq(now),
            sync_runs::report.eq(report.to_string()),
        ))
        .execute(conn)?;
    super::sync_runs::clear_stage(conn, &lapsed.run_id)?;
    Ok(Some(lapsed.run_id.clone()))
}

/// Extends the lease held for `run_id` by the TTL; false when the run no longer holds it.
pub fn renew(
    conn: &mut DbConn,
    connection_id: &str,
    run_id: &str,
    terms: &LeaseTerms,
    now: i64,
) -> Result<bool> {
    let renewed =
        diesel::update(sync_leases::table.find(connection_id).filter(sync_leases::run_id.eq(run_id)))
            .set(sync_leases::expires_at.eq(now.saturating_add(terms.ttl_ms)))
            .execute(conn)?;
    Ok(renewed == 1)
}

/// Whether `run_id` holds its connection's lease (lapsed or not: lapsed and not yet taken over,
/// nothing ran meanwhile).
pub fn holds(conn: &mut DbConn, connection_id: &str, run_id: &str) -> Result<bool> {
    Ok(find(conn, connection_id)?.is_some_and(|lease| lease.run_id == run_id))
}

/// Gives the lease back, if `run_id` still holds it.
pub fn release(conn: &mut DbConn, connection_id: &str, run_id: &str) -> Result<()> {
    diesel::delete(sync_leases::table.find(connection_id).filter(sync_leases::run_id.eq(run_id)))
        .execute(conn)?;
    Ok(())
}

/// Undoes a run recorded in this transaction that will not run after all (the scheduler found
/// it no longer due once it held the lease): its lease and its row go.
pub fn withdraw(conn: &mut DbConn, connection_id: &str, run_id: &str) -> Result<()> {
    release(conn, connection_id, run_id)?;
    diesel::delete(sync_runs::table.find(run_id).filter(sync_runs::status.eq("running"))).execute(conn)?;
    Ok(())
}

/// What the scheduler judges a connection's due runs by (`sync::scheduler::due`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTimes {
    /// When its last successful full run ended.
    pub last_full_at: Option<i64>,
    /// When its last run that applies started, unless it failed: succeeded, braked or running.
    pub last_run_at: Option<i64>,
    /// When its last scheduled run started, whatever became of it.
    pub last_scheduled_at: Option<i64>,
}

/// NotFound once the connection is deleted. `leaving_out`: a run recorded in this very
/// transaction, whose due-ness is being judged.
pub fn run_times(conn: &mut DbConn, connection_id: &str, leaving_out: Option<&str>) -> Result<RunTimes> {
    let last_full_at: Option<i64> =
        connections::table.find(connection_id).select(connections::last_full_at).first(conn)?;
    let other = leaving_out.unwrap_or_default();
    let last_run_at = sync_runs::table
        .filter(sync_runs::connection_id.eq(connection_id))
        .filter(sync_runs::id.ne(other))
        .filter(sync_runs::dry_run.eq(false))
        .filter(sync_runs::status.ne("failed"))
        .select(diesel::dsl::max(sync_runs::started_at))
        .first::<Option<i64>>(conn)?;
    let last_scheduled_at = sync_runs::table
        .filter(sync_runs::connection_id.eq(connection_id))
        .filter(sync_runs::id.ne(other))
        .filter(sync_runs::trigger.eq("schedule"))
        .select(diesel::dsl::max(sync_runs::started_at))
        .first::<Option<i64>>(conn)?;
    Ok(RunTimes { last_full_at, last_run_at, last_scheduled_at })
}

impl Store {
    /// Renews the lease `run_id` holds every [`LeaseTerms::renew_every`] for as long as it is
    /// awaited. Resolves only when the run has lost the lease: its instance failed to renew it
    /// in time and another run took the connection over. A failed renewal (the database away
    /// for a moment) is retried.
    pub async fn hold_sync_lease(&self, connection_id: String, run_id: String) -> Error {
        let terms = self.sync_lease().clone();
        let mut ticks = tokio::time::interval(terms.renew_every());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let (connection, run, renewal) = (connection_id.clone(), run_id.clone(), terms.clone());
            match self.write(move |conn, _| renew(conn, &connection, &run, &renewal, now_millis())).await {
                Ok(true) => {}
                Ok(false) => {
                    return Error::Conflict(format!(
                        "this run lost its lease on the connection: its instance could not renew it within {} s \
                         (a stalled process or an unreachable database) and another run took the connection over; \
                         this run stopped where it was",
                        terms.ttl_ms / 1000
                    ))
                }
                Err(error) => {
                    tracing::warn!(%error, connection = %connection_id, run = %run_id, "renewing a sync lease failed; retrying")
                }
            }
        }
    }
}
