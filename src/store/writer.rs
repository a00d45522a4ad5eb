//! SQLite group commit: one writer thread runs every write, many per transaction.
//!
//! A durable SQLite commit costs an fsync (this disk manages about 2,500 a second), and SQLite
//! allows one writer at a time anyway. So writes queue here; the writer takes whatever has
//! queued (up to [`MAX_BATCH`]), runs each in its own SAVEPOINT inside one transaction, commits
//! once, and only then answers each caller. A failing write rolls back its savepoint only, so
//! one bad request never affects another; if the commit fails, every caller in the batch gets
//! the error. A 201 therefore always means the row is on disk.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use diesel::connection::{Connection, TransactionManager};

use super::conn::{establish, DatabaseUrl, DbConn};
use crate::error::{Error, Result};
use crate::scim::schema::Registry;

/// Writes committed together at most; bounds the latency one batch adds.
const MAX_BATCH: usize = 256;

/// Called once the batch's fate is known: `None` when it committed.
type Delivery = Box<dyn FnOnce(Option<&Error>) + Send>;
/// A queued write. Given the connection (or why there is none), it runs and returns how to
/// answer its caller.
type Job = Box<dyn FnOnce(std::result::Result<&mut DbConn, &Error>, &Registry) -> Delivery + Send>;

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
    pub fn submit<T, F>(&self, work: F, reply: impl FnOnce(Result<T>) + Send + 'static) -> Result<()>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &Registry) -> Result<T> + Send + 'static,
    {
        let job: Job = Box::new(move |conn, registry| {
            let outcome = match conn {
                // A nested diesel transaction is a SAVEPOINT: an error undoes this write only.
                Ok(conn) => conn.transaction(|c| work(c, registry)),
                Err(error) => Err(Error::Unavailable(format!("the database is not available: {error}"))),
            };
            Box::new(move |commit_error: Option<&Error>| match commit_error {
                None => reply(outcome),
                Some(error) => {
                    reply(Err(Error::Unavailable(format!("the write could not be committed: {error}"))))
                }
            })
        });
        self.queue.send(job).map_err(|_| Error::Unavailable("the SQLite writer has stopped".into()))
    }
}

fn run(url: &DatabaseUrl, registry: &Registry, jobs: &Receiver<Job>) {
    let mut connection: Option<DbConn> = None;
    // Ends when every Store (and so every sender) is gone.
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if connection.is_none() {
            match establish(url).and_then(|mut conn| {
                // The one writer touches every index of a large write (an import batch: users,
                // their values, audit rows); a page cache that holds them spares re-reading and
                // spilling pages mid-transaction. 64 MiB, for this connection only.
                diesel::connection::SimpleConnection::batch_execute(
                    &mut conn,
                    "PRAGMA cache_size = -65536;",
                )?;
                Ok(conn)
            }) {
                Ok(conn) => connection = Some(conn),
                Err(e) => {
                    let error = Error::Unavailable(format!("cannot open the database: {e}"));
                    tracing::error!(%error, "SQLite writer");
                    for job in batch {
                        job(Err(&error), registry)(Some(&error));
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

/// Runs one batch in one transaction. Returns false when the connection should be replaced.
fn commit_batch(conn: &mut DbConn, registry: &Registry, batch: Vec<Job>) -> bool {
    type Manager = <DbConn as Connection>::TransactionManager;
    if let Err(e) = Manager::begin_transaction(conn) {
        let error = Error::Unavailable(format!("cannot begin a transaction: {e}"));
        for job in batch {
            job(Err(&error), registry)(Some(&error));
        }
        return false;
    }
    let mut deliveries = Vec::with_capacity(batch.len());
    let mut panicked = false;
    for job in batch {
        match catch_unwind(AssertUnwindSafe(|| job(Ok(&mut *conn), registry))) {
            Ok(delivery) => deliveries.push(delivery),
            Err(_) => panicked = true,
        }
    }
    let commit = if panicked {
        // A panic mid-write leaves the savepoint state unknown: commit nothing.
        let _ = Manager::rollback_transaction(conn);
        Err(Error::Internal("a write panicked; the batch was rolled back".into()))
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
