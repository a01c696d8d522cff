//! Group commit. Writes are queued to one writer thread, which runs every write waiting at
//! that moment in one transaction, each under its own savepoint, and commits them with one
//! fsync (`synchronous=FULL` as always); the connection is the same one every other method
//! uses, behind the same mutex. No caller
//! returns before the commit that holds its work: durability is the same as one transaction
//! per call, and many calls share the cost of the disk flush.
//!
//! A job that fails is rolled back to its savepoint and gets its error; the others commit. A
//! failed commit fails every job of the batch. Jobs run in the order they were queued, one
//! after the other, so each sees the writes of those before it (the audit chain included).

use super::{Store, StoreError};
use rusqlite::Transaction;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

/// Group commits made and writes they held, since the process started (the bench shows
/// writes per commit).
static COMMITS: AtomicU64 = AtomicU64::new(0);
static WRITES: AtomicU64 = AtomicU64::new(0);

/// (commits, writes) of grouped writes so far in this process.
pub fn group_commit_counts() -> (u64, u64) {
    (
        COMMITS.load(Ordering::Relaxed),
        WRITES.load(Ordering::Relaxed),
    )
}

/// Called once the batch's commit is known: `None` committed, `Some(why)` not.
type Finish = Box<dyn FnOnce(Option<&str>) + Send>;
/// A queued write: runs in the batch's transaction (or is told it could not begin).
type Job = Box<dyn FnOnce(Result<&Transaction<'_>, &str>) -> Finish + Send>;

/// The writes waiting for the next group commit, and the writer thread that commits them
/// (started at the first grouped write; it ends when the last handle to the store is gone).
#[derive(Default)]
pub(super) struct Queue(OnceLock<Mutex<mpsc::Sender<Job>>>);

/// Most writes in one commit.
const MAX_BATCH: usize = 1024;

impl Queue {
    fn push(&self, conn: &Arc<Mutex<rusqlite::Connection>>, job: Job) -> Result<(), Job> {
        let tx = self.0.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let conn = conn.clone();
            let spawned = std::thread::Builder::new()
                .name("wagate-writer".into())
                .spawn(move || writer(&conn, &rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the store's writer thread");
            }
            Mutex::new(tx)
        });
        let tx = tx.lock().unwrap_or_else(|p| p.into_inner());
        tx.send(job).map_err(|e| e.0)
    }
}

/// The writer: takes the queued writes (all that are waiting, up to a bound) and commits
/// them together, until the store is dropped.
fn writer(conn: &Mutex<rusqlite::Connection>, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        // Those that came while the connection was busy join this commit.
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, jobs);
    }
}

/// A queued write running `f`, whose result (after the commit) goes to `done`.
fn job<R, F>(f: F, done: impl FnOnce(Result<R, StoreError>) + Send + 'static) -> Job
where
    R: Send + 'static,
    F: FnOnce(&Transaction<'_>) -> rusqlite::Result<R> + Send + 'static,
{
    Box::new(move |tx| {
        let res = match tx {
            Ok(tx) => in_savepoint(tx, f).map_err(StoreError::Sql),
            Err(why) => Err(StoreError::Commit(why.to_string())),
        };
        Box::new(move |commit_error| {
            done(match (res, commit_error) {
                (Ok(_), Some(why)) => Err(StoreError::Commit(why.to_string())),
                (res, _) => res,
            })
        })
    })
}

impl Store {
    /// Runs `f` in a transaction shared with the writes queued at the same time, and returns
    /// its result once that transaction is committed.
    pub(super) fn grouped<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<R> + Send + 'static,
    {
        let (send, recv) = mpsc::sync_channel::<Result<R, StoreError>>(1);
        let job = job(f, move |r| {
            let _ = send.send(r);
        });
        if let Err(job) = self.group.push(&self.conn, job) {
            // No writer thread: commit it here, alone.
            let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            run_batch(&mut conn, vec![job]);
        }
        recv.recv()
            .unwrap_or_else(|_| Err(StoreError::Join("a grouped write was lost".into())))
    }

    /// As [`Store::grouped`], for async callers: no blocking thread waits for the commit.
    pub(super) async fn grouped_async<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<R> + Send + 'static,
    {
        let (send, recv) = tokio::sync::oneshot::channel::<Result<R, StoreError>>();
        let job = job(f, move |r| {
            let _ = send.send(r);
        });
        if let Err(job) = self.group.push(&self.conn, job) {
            let conn = self.conn.clone();
            tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                run_batch(&mut conn, vec![job]);
            });
        }
        recv.await
            .unwrap_or_else(|_| Err(StoreError::Join("a grouped write was lost".into())))
    }
}

fn in_savepoint<R>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    tx.execute_batch("SAVEPOINT grouped")?;
    match f(tx) {
        Ok(r) => {
            tx.execute_batch("RELEASE grouped")?;
            Ok(r)
        }
        Err(e) => {
            tx.execute_batch("ROLLBACK TO grouped; RELEASE grouped")?;
            Err(e)
        }
    }
}

fn run_batch(conn: &mut rusqlite::Connection, jobs: Vec<Job>) {
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let why = e.to_string();
            for job in jobs {
                job(Err(&why))(Some(&why));
            }
            return;
        }
    };
    COMMITS.fetch_add(1, Ordering::Relaxed);
    WRITES.fetch_add(jobs.len() as u64, Ordering::Relaxed);
    let finishes: Vec<Finish> = jobs.into_iter().map(|job| job(Ok(&tx))).collect();
    let committed = tx.commit().map_err(|e| e.to_string());
    for finish in finishes {
        finish(committed.as_ref().err().map(String::as_str));
    }
}
