//! SQLite group commit: one writer thread runs every write, many per transaction.
//!
//! A durable SQLite commit costs an fsync (this disk manages about 2,500 a second), and SQLite
//! allows one writer at a time anyway. So writes queue here; the writer takes whatever has
//! queued (up to [`MAX_BATCH`]), runs each in its own SAVEPOINT inside one transaction, commits
//! once, and only then answers each caller. A failing write rolls back its savepoint only, so
//! one bad request never affects another; if the commit fails, every caller in the batch gets
//! the error. A 201 therefore always means the row is on disk.
//!
//! A write alone in its transaction runs without a savepoint (its failure rolls the transaction
//! back instead): inside a savepoint SQLite first copies every page a write touches to a
//! sub-journal, which for a large write (an import batch of 500 users touches thousands of index
//! pages) cost more than the write itself. Bulk writes are therefore never grouped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use diesel::connection::{AnsiTransactionManager, Connection, TransactionManager};

use super::conn::{establish, DatabaseUrl, DbConn};
use crate::error::{Error, Result};
use crate::scim::schema::Registry;

/// Writes committed together at most; bounds the latency one batch adds.
const MAX_BATCH: usize = 256;

/// Called once the batch's fate is known: `None` when it committed.
type Delivery = Box<dyn FnOnce(Option<&Error>) + Send>;
/// A queued write. Given the connection (or why there is none) and whether it is alone in its
/// transaction, it runs and returns how to answer its caller, and whether it failed.
type Work =
    Box<dyn FnOnce(std::result::Result<&mut DbConn, &Error>, &Registry, bool) -> (Delivery, bool) + Send>;

struct Job {
    /// Runs in a transaction of its own (see the module comment).
    bulk: bool,
    work: Work,
}

#[derive(Debug, Clone)]
pub struct Writer {
    queue: Sender<Job>,
}

impl Writer {
    pub fn start(url: DatabaseUrl, registry: Arc<Registry>) -> Result<Writer> {
        let (queue, jobs) = channel::<Job>();
        std::thread::Builder::new()
            .name("scimd-sqlite-writer".into())
            .spawn(move || run(&url, &registry, &jobs))
            .map_err(|e| Error::internal("starting the SQLite writer", e))?;
        Ok(Writer { queue })
    }

    /// Queues `work`; `reply` receives its result after the commit (or the reason it failed).
    /// A `bulk` write gets a transaction of its own.
    pub fn submit<T, F>(
        &self,
        bulk: bool,
        work: F,
        reply: impl FnOnce(Result<T>) + Send + 'static,
    ) -> Result<()>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &Registry) -> Result<T> + Send + 'static,
    {
        let work: Work = Box::new(move |conn, registry, alone| {
            let outcome = match conn {
                // Alone, a failure rolls the whole transaction back; grouped, a nested diesel
                // transaction is a SAVEPOINT, so an error undoes this write only.
                Ok(conn) if alone => work(conn, registry),
                Ok(conn) => conn.transaction(|c| work(c, registry)),
                Err(error) => Err(Error::Unavailable(format!("the database is not available: {error}"))),
            };
            let failed = outcome.is_err();
            let delivery: Delivery = Box::new(move |commit_error: Option<&Error>| match commit_error {
                None => reply(outcome),
                Some(error) => {
                    reply(Err(Error::Unavailable(format!("the write could not be committed: {error}"))))
                }
            });
            (delivery, failed)
        });
        self.queue
            .send(Job { bulk, work })
            .map_err(|_| Error::Unavailable("the SQLite writer has stopped".into()))
    }
}

fn run(url: &DatabaseUrl, registry: &Registry, jobs: &Receiver<Job>) {
    let mut connection: Option<DbConn> = None;
    // Ends when every Store (and so every sender) is gone.
    // A bulk job met while gathering a batch waits for the next one.
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        let grouping = !first.bulk;
        let mut batch = vec![first];
        while grouping && batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) if job.bulk => {
                    held = Some(job);
                    break;
                }
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if connection.is_none() {
            match establish(url).and_then(|mut conn| {
                // The one writer touches every index of a large write (an import batch: users,
                // their values, audit rows); a page cache that holds them spares re-reading and
                // spilling pages mid-transaction. 64 MiB, for this connection only. Statement
                // journals (a multi-row INSERT keeps the pages it changes until it completes) stay
                // in memory: on disk they were a write to a temp file per page changed. The WAL
                // is copied back into the database when it reaches 64 MiB, not SQLite's 4 MiB: a
                // page changed by several commits in between is copied once (a 100k import:
                // 84.7 -> 76.1 s; BENCHMARKS.md). Only this connection commits, so only its
                // setting matters; readers find pages in a longer WAL by its index.
                diesel::connection::SimpleConnection::batch_execute(
                    &mut conn,
                    "PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 16384;",
                )?;
                Ok(conn)
            }) {
                Ok(conn) => connection = Some(conn),
                Err(e) => {
                    let error = Error::Unavailable(format!("cannot open the database: {e}"));
                    tracing::error!(%error, "SQLite writer");
                    for job in batch {
                        (job.work)(Err(&error), registry, false).0(Some(&error));
                    }
                    continue;
                }
            }
        }
        if let Some(conn) = connection.as_mut() {
            if !commit_batch(conn, registry, batch) {
                // The connection may be in an unknown transaction state: start afresh.
                connection = None;
            }
        }
    }
}

/// Begins a batch's transaction holding the write lock. Another process may write the same file
/// (a second scimd behind a load balancer, or the CLI): a deferred transaction that read before
/// it wrote would then fail at its first write, at once and without waiting ("database is
/// locked": its snapshot is stale), whereas IMMEDIATE waits out the busy timeout for the lock
/// before reading anything. In this process the writer is the only writer, so it costs nothing.
fn begin_immediate(conn: &mut DbConn) -> diesel::QueryResult<()> {
    match conn {
        DbConn::Sqlite(sqlite) => AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE"),
        DbConn::Postgres(_) => <DbConn as Connection>::TransactionManager::begin_transaction(conn),
    }
}

/// Runs one batch in one transaction. Returns false when the connection should be replaced.
fn commit_batch(conn: &mut DbConn, registry: &Registry, batch: Vec<Job>) -> bool {
    type Manager = <DbConn as Connection>::TransactionManager;
    if let Err(e) = begin_immediate(conn) {
        let error = Error::Unavailable(format!("cannot begin a transaction: {e}"));
        for job in batch {
            (job.work)(Err(&error), registry, false).0(Some(&error));
        }
        return false;
    }
    let alone = batch.len() == 1;
    let mut deliveries = Vec::with_capacity(batch.len());
    let mut panicked = false;
    let mut failed_alone = false;
    for job in batch {
        match catch_unwind(AssertUnwindSafe(|| (job.work)(Ok(&mut *conn), registry, alone))) {
            Ok((delivery, failed)) => {
                failed_alone |= alone && failed;
                deliveries.push(delivery);
            }
            Err(_) => panicked = true,
        }
    }
    let commit = if panicked {
        // A panic mid-write leaves the savepoint state unknown: commit nothing.
        let _ = Manager::rollback_transaction(conn);
        Err(Error::Internal("a write panicked; the batch was rolled back".into()))
    } else if failed_alone {
        // The one write failed: undo whatever it did, and answer with its own error.
        return match Manager::rollback_transaction(conn) {
            Ok(()) => {
                for delivery in deliveries {
                    delivery(None);
                }
                true
            }
            Err(e) => {
                let error = Error::Unavailable(format!("rollback failed: {e}"));
                for delivery in deliveries {
                    delivery(Some(&error));
                }
                false
            }
        };
    } else {
        Manager::commit_transaction(conn).map_err(|e| Error::Unavailable(format!("commit failed: {e}")))
    };
    if let Err(error) = &commit {
        tracing::error!(%error, writes = deliveries.len(), "SQLite batch not committed");
        let _ = Manager::rollback_transaction(conn);
    }
    let committed = commit.is_ok();
    for delivery in deliveries {
        delivery(commit.as_ref().err());
    }
    committed
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use diesel::connection::SimpleConnection;

    use super::*;
    use crate::store::db_error;

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }

    /// Another process commits to the same file after a queued write has read and before it
    /// writes, as a second scimd does behind a load balancer. The write still commits: the
    /// other process waits for it instead of making it fail with "database is locked".
    #[test]
    fn a_write_that_reads_first_commits_while_another_process_writes() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("two.db").to_string_lossy().into_owned());
        establish(&url).unwrap().batch_execute("CREATE TABLE t (x INTEGER)").unwrap();
        let writer = Writer::start(url.clone(), Arc::new(Registry::load().unwrap())).unwrap();
        let (reply, answer) = channel();
        let other_url = url.clone();
        writer
            .submit(
                false,
                move |conn, _| {
                    conn.batch_execute("SELECT count(*) FROM t").map_err(db_error)?;
                    let (done, finished) = channel();
                    let other = std::thread::spawn(move || {
                        let outcome = establish(&other_url).map_err(|e| e.to_string()).and_then(|mut c| {
                            c.batch_execute("INSERT INTO t VALUES (1)").map_err(|e| e.to_string())
                        });
                        let _ = done.send(());
                        outcome
                    });
                    // Deferred, the other process commits at once; immediate, it waits for us.
                    let _ = finished.recv_timeout(Duration::from_millis(500));
                    conn.batch_execute("INSERT INTO t VALUES (2)").map_err(db_error)?;
                    Ok(other)
                },
                move |result| {
                    let _ = reply.send(result);
                },
            )
            .unwrap();
        let other = answer.recv().unwrap().unwrap();
        other.join().unwrap().unwrap();
        let DbConn::Sqlite(mut check) = establish(&url).unwrap() else { panic!("a SQLite connection") };
        use diesel::RunQueryDsl;
        let rows = diesel::sql_query("SELECT count(*) AS n FROM t").get_result::<Count>(&mut check).unwrap();
        assert_eq!(rows.n, 2);
    }
}
