//! The scheduler of `scimd serve`: runs each connection on its `schedule` (a full run every
//! `full_every`, a delta run every `delta_every`). Every instance sharing the database may run a
//! scheduler; each scheduled run still happens once, on the instance that takes the connection's
//! lease (`store::sync_leases`), which checks again, under the lease, that the run is due.
//!
//! One run at a time per instance: a round visits the connections in turn. [`due`] is pure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::connection::Schedule;
use super::engine::{self, RunRequest};
use crate::config::SyncConfig;
use crate::encryption::SecretKey;
use crate::error::{Error, Result};
use crate::store::sync_leases::{self, RunTimes};
use crate::store::{connections, now_millis, DbConn, Store};

/// The run a connection is due for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Full,
    Delta,
}

/// A schedule's intervals, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Every {
    pub delta_ms: i64,
    pub full_ms: i64,
}

impl Every {
    pub fn of(schedule: &Schedule) -> Result<Every> {
        let parse = |key: &str, text: &str| {
            crate::cli::parse_duration_millis(text)
                .map_err(|e| Error::Internal(format!("stored connection: schedule.{key}: {e}")))
        };
        Ok(Every {
            delta_ms: parse("delta_every", &schedule.delta_every)?,
            full_ms: parse("full_every", &schedule.full_every)?,
        })
    }
}

/// Which run, if any, a connection is due for at `now`:
/// - none while its last scheduled run started less than the shorter interval ago, whatever
///   became of it: a run that failed is retried on the schedule's rhythm, not every round;
/// - full when it has had no successful full run (by any trigger) within `full_every`;
/// - delta when no run that applies started within `delta_every` (failed and dry runs do not
///   count; one still running does).
pub fn due(every: &Every, times: &RunTimes, now: i64) -> Option<Due> {
    let since = |at: i64| now.saturating_sub(at);
    let retry_after = every.delta_ms.min(every.full_ms);
    if times.last_scheduled_at.is_some_and(|at| since(at) < retry_after) {
        return None;
    }
    if times.last_full_at.is_none_or(|at| since(at) >= every.full_ms) {
        return Some(Due::Full);
    }
    if times.last_run_at.is_none_or(|at| since(at) >= every.delta_ms) {
        return Some(Due::Delta);
    }
    None
}

/// A running scheduler; dropping it stops it (a run under way stops between two transactions,
/// and its lease lapses).
#[derive(Debug)]
pub struct Handle {
    rounds: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Rounds completed so far (each visits every connection once).
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::SeqCst)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the scheduler on the current tokio runtime, unless `sync.scheduler` is off. `key`
/// opens the connections' credentials.
pub fn spawn(store: Store, key: Option<SecretKey>, config: &SyncConfig) -> Option<Handle> {
    if !config.scheduler {
        return None;
    }
    let tick = Duration::from_secs(config.scheduler_tick_secs.max(1));
    let rounds = Arc::new(AtomicU64::new(0));
    let scheduler = Scheduler { store, key, rounds: rounds.clone() };
    let task = tokio::spawn(async move {
        tracing::info!(tick_secs = tick.as_secs(), holder = %scheduler.store.sync_lease().holder, "sync scheduler started");
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = scheduler.round().await {
                tracing::warn!(%error, "sync scheduler round failed; will retry");
            }
            scheduler.rounds.fetch_add(1, Ordering::SeqCst);
        }
    });
    Some(Handle { rounds, task })
}

struct Scheduler {
    store: Store,
    key: Option<SecretKey>,
    rounds: Arc<AtomicU64>,
}

impl Scheduler {
    async fn round(&self) -> Result<()> {
        let ids: Vec<String> = self
            .store
            .read(|conn, _| connections::list_all(conn))
            .await?
            .into_iter()
            .filter(|c| c.config.schedule.enabled)
            .map(|c| c.id)
            .collect();
        for id in ids {
            match self.visit(&id).await {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(error) => {
                    tracing::warn!(%error, connection = %id, "scheduling a sync run failed; will retry")
                }
            }
        }
        Ok(())
    }

    /// Ends a lapsed lease's run, then starts the run due, if any, and waits for it.
    async fn visit(&self, id: &str) -> Result<()> {
        let connection_id = id.to_string();
        let lease = self.store.read(move |conn, _| sync_leases::find(conn, &connection_id)).await?;
        match lease {
            Some(lease) if lease.expires_at > now_millis() => return Ok(()),
            Some(_) => {
                let connection_id = id.to_string();
                let reaped = self
                    .store
                    .write(move |conn, _| sync_leases::reap_lapsed(conn, &connection_id, now_millis()))
                    .await?;
                if let Some(run) = reaped {
                    tracing::warn!(connection = %id, run = %run, "a sync run's instance stopped (its lease lapsed); the run is marked failed");
                }
            }
            None => {}
        }
        let connection_id = id.to_string();
        let (connection, times) = self
            .store
            .read(move |conn, _| {
                Ok((
                    connections::get(conn, &connection_id)?,
                    sync_leases::run_times(conn, &connection_id, None)?,
                ))
            })
            .await?;
        if !connection.config.schedule.enabled {
            return Ok(());
        }
        let every = Every::of(&connection.config.schedule)?;
        let Some(planned) = due(&every, &times, now_millis()) else { return Ok(()) };
        let request =
            RunRequest { full: planned == Due::Full, dry_run: false, confirm: false, trigger: "schedule" };
        let connection_id = id.to_string();
        // Under the lease: another instance may have run it since the times above were read.
        let still_due = move |conn: &mut DbConn, run_id: &str| {
            let times = sync_leases::run_times(conn, &connection_id, Some(run_id))?;
            Ok(due(&every, &times, now_millis()) == Some(planned))
        };
        match engine::start_when(&self.store, &connection, request, still_due).await {
            Ok(Some(started)) => {
                started.execute(&self.store, self.key.as_ref(), &connection, &|_| {}).await?;
            }
            Ok(None) => {
                tracing::debug!(connection = %id, "the scheduled run is no longer due: another instance ran it")
            }
            Err(Error::Conflict(detail)) => {
                tracing::debug!(connection = %id, %detail, "another run holds the connection")
            }
            Err(other) => return Err(other),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;

    fn every() -> Every {
        Every { delta_ms: 2 * HOUR, full_ms: 24 * HOUR }
    }

    fn times(
        last_full_at: Option<i64>,
        last_run_at: Option<i64>,
        last_scheduled_at: Option<i64>,
    ) -> RunTimes {
        RunTimes { last_full_at, last_run_at, last_scheduled_at }
    }

    #[test]
    fn due_runs_follow_the_schedule() {
        let now = 100 * HOUR;
        let cases: [(&str, RunTimes, Option<Due>); 12] = [
            ("a connection never run", times(None, None, None), Some(Due::Full)),
            (
                "a full run 23 h ago, a delta 1 h ago",
                times(Some(now - 23 * HOUR), Some(now - HOUR), None),
                None,
            ),
            (
                "a full run 23 h ago, a delta 2 h ago",
                times(Some(now - 23 * HOUR), Some(now - 2 * HOUR), None),
                Some(Due::Delta),
            ),
            (
                "a full run 24 h ago, a delta just now",
                times(Some(now - 24 * HOUR), Some(now - MIN), None),
                Some(Due::Full),
            ),
            ("a full run an hour ago", times(Some(now - HOUR), Some(now - HOUR), Some(now - HOUR)), None),
            (
                "runs only by hand: the last 3 h ago",
                times(Some(now - 5 * HOUR), Some(now - 3 * HOUR), None),
                Some(Due::Delta),
            ),
            (
                "a scheduled full run failed a minute ago: not retried every round",
                times(None, None, Some(now - MIN)),
                None,
            ),
            (
                "a scheduled full run failed 2 h ago: retried, still full",
                times(None, None, Some(now - 2 * HOUR)),
                Some(Due::Full),
            ),
            (
                "a scheduled delta failed a minute ago, the last good run 3 h ago",
                times(Some(now - 10 * HOUR), Some(now - 3 * HOUR), Some(now - MIN)),
                None,
            ),
            (
                "a run still going (or braked) 10 min ago",
                times(Some(now - 10 * HOUR), Some(now - 10 * MIN), Some(now - 10 * MIN)),
                None,
            ),
            (
                "a manual run 10 min ago, no full yet",
                times(None, Some(now - 10 * MIN), None),
                Some(Due::Full),
            ),
            (
                "a clock behind the last run",
                times(Some(now + HOUR), Some(now + HOUR), Some(now + HOUR)),
                None,
            ),
        ];
        for (case, times, expected) in cases {
            assert_eq!(due(&every(), &times, now), expected, "{case}");
        }
    }

    #[test]
    fn a_failed_run_is_retried_at_the_shorter_interval() {
        let every = Every { delta_ms: 48 * HOUR, full_ms: 24 * HOUR };
        let now = 100 * HOUR;
        let failed = times(None, None, Some(now - 24 * HOUR));
        assert_eq!(due(&every, &failed, now), Some(Due::Full));
        let failed = times(None, None, Some(now - 23 * HOUR));
        assert_eq!(due(&every, &failed, now), None);
    }

    #[test]
    fn intervals_come_from_the_schedule() {
        let every = Every::of(&Schedule::default()).unwrap();
        assert_eq!(every, Every { delta_ms: 2 * HOUR, full_ms: 24 * HOUR });
        let bad = Schedule { delta_every: "soon".into(), ..Schedule::default() };
        assert!(Every::of(&bad).unwrap_err().to_string().contains("schedule.delta_every"));
    }
}
