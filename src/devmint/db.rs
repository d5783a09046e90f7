//! The dev mint's SQLite, with writers queueing in memory instead of in SQLite.
//!
//! cdk's SQLite backend runs each query on the calling thread, and a writer that finds the
//! write lock taken sleeps in SQLite's busy handler, on that thread, for up to 10 s. That is
//! fatal when the lock's holder is a task that needs a thread to reach its `COMMIT`:
//! - every worker may be asleep in the busy handler (cdk's subscription and payment tasks
//!   write outside the mint's request turns, so their number is not bounded by them);
//! - or the holder sits in the LIFO slot of the very worker that went to sleep (tokio does
//!   not let other workers steal that slot). cdk spawns the rollback of a dropped transaction
//!   from the dropping task, which lands it exactly there when that task writes next.
//!
//! Either way the mint stopped for 10 s and every waiting write failed with "database is
//! locked" (bench_orders at 20 buyers × 100 orders: orders refused, type 1s 10–70 s late).
//!
//! Here a connection takes the database's one write turn, an async semaphore, before
//! `BEGIN IMMEDIATE` and gives it back at `COMMIT` or `ROLLBACK`; a write outside a
//! transaction holds it for that statement. So only the writer holding the turn ever touches
//! SQLite's write lock, and the others wait without a thread. Reads need no turn: in WAL mode
//! they never wait for a writer.
//!
//! A wait for the turn is bounded ([`TURN_WAIT`]): a task that holds the turn and writes
//! through a second connection would otherwise wait for itself for good. After the bound the
//! write goes ahead and SQLite's own lock decides, as it did without the turn.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdk_common::database::Error;
use cdk_sql_common::database::{DatabaseConnector, DatabaseExecutor, DatabaseTransaction};
use cdk_sql_common::mint::SQLMintAuthDatabase;
use cdk_sql_common::pool::{self, DatabaseConfig, DatabasePool};
use cdk_sql_common::stmt::{Column, Statement};
use cdk_sql_common::SQLMintDatabase;
use cdk_sqlite::SqliteConnectionManager;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The dev mint's database.
pub type DevMintDatabase = SQLMintDatabase<WriteTurns>;
/// The dev mint's auth database (spent BATs, protected endpoints).
pub type DevMintAuthDatabase = SQLMintAuthDatabase<WriteTurns>;

type Sqlite = <SqliteConnectionManager as DatabasePool>::Connection;
type SqliteConfig = <SqliteConnectionManager as DatabasePool>::Config;

/// How long a writer waits for the turn before it writes anyway. SQLite's busy handler
/// gives up after 10 s, so a write that was going to fail still fails in about the same time.
const TURN_WAIT: Duration = Duration::from_secs(10);

/// Opens (and migrates) the dev mint's database at `path`.
pub async fn open(path: PathBuf) -> Result<DevMintDatabase, Error> {
    DevMintDatabase::new(Config::new(path)).await
}

/// Opens (and migrates) the dev mint's auth database at `path`.
pub async fn open_auth(path: PathBuf) -> Result<DevMintAuthDatabase, Error> {
    DevMintAuthDatabase::new(Config::new(path)).await
}

/// cdk's SQLite pool, each of whose connections takes the file's write turn to write.
#[derive(Debug)]
pub struct WriteTurns;

/// cdk's SQLite configuration and the write turn of its file.
#[derive(Debug, Clone)]
pub struct Config {
    sqlite: SqliteConfig,
    turn: Arc<Semaphore>,
}

impl Config {
    fn new(path: PathBuf) -> Self {
        Self {
            sqlite: path.into(),
            turn: Arc::new(Semaphore::new(1)),
        }
    }
}

impl DatabaseConfig for Config {
    fn max_size(&self) -> usize {
        self.sqlite.max_size()
    }

    fn default_timeout(&self) -> Duration {
        self.sqlite.default_timeout()
    }
}

impl DatabasePool for WriteTurns {
    type Connection = TurnTaking;
    type Config = Config;
    type Error = <SqliteConnectionManager as DatabasePool>::Error;

    fn new_resource(
        config: &Config,
        stale: Arc<AtomicBool>,
        timeout: Duration,
    ) -> Result<TurnTaking, pool::Error<Self::Error>> {
        Ok(TurnTaking {
            sqlite: SqliteConnectionManager::new_resource(&config.sqlite, stale, timeout)?,
            turn: Arc::clone(&config.turn),
            held: Mutex::new(None),
        })
    }
}

/// One SQLite connection, holding the write turn while its transaction is open.
pub struct TurnTaking {
    sqlite: Sqlite,
    turn: Arc<Semaphore>,
    held: Mutex<Option<OwnedSemaphorePermit>>,
}

impl fmt::Debug for TurnTaking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnTaking")
            .field("sqlite", &self.sqlite)
            .field("in_transaction", &self.holds_turn())
            .finish()
    }
}

impl TurnTaking {
    /// The turn, or `None` once [`TURN_WAIT`] has passed without it.
    async fn take_turn(&self) -> Option<OwnedSemaphorePermit> {
        match tokio::time::timeout(TURN_WAIT, Arc::clone(&self.turn).acquire_owned()).await {
            // The semaphore is never closed.
            Ok(permit) => permit.ok(),
            Err(_) => {
                tracing::warn!(
                    "dev mint: no write turn in {} s; writing without it",
                    TURN_WAIT.as_secs()
                );
                None
            }
        }
    }

    fn holds_turn(&self) -> bool {
        self.held.lock().map(|held| held.is_some()).unwrap_or(false)
    }

    fn hold(&self, permit: Option<OwnedSemaphorePermit>) {
        if let Ok(mut held) = self.held.lock() {
            *held = permit;
        }
    }
}

impl DatabaseConnector for TurnTaking {
    type Transaction = TurnTransaction;
}

/// Begins, commits and rolls back like cdk's SQLite, taking and giving back the turn.
pub struct TurnTransaction;

type SqliteTransaction = <Sqlite as DatabaseConnector>::Transaction;

#[async_trait::async_trait]
impl DatabaseTransaction<TurnTaking> for TurnTransaction {
    async fn begin(conn: &mut TurnTaking) -> Result<(), Error> {
        let permit = conn.take_turn().await;
        SqliteTransaction::begin(&mut conn.sqlite).await?;
        conn.hold(permit);
        Ok(())
    }

    async fn commit(conn: &mut TurnTaking) -> Result<(), Error> {
        // A failed COMMIT leaves the transaction open, and with it the write lock: the turn
        // stays held until the rollback that follows, or the connection's end.
        SqliteTransaction::commit(&mut conn.sqlite).await?;
        conn.hold(None);
        Ok(())
    }

    async fn rollback(conn: &mut TurnTaking) -> Result<(), Error> {
        SqliteTransaction::rollback(&mut conn.sqlite).await?;
        conn.hold(None);
        Ok(())
    }
}

#[async_trait::async_trait]
impl DatabaseExecutor for TurnTaking {
    fn name() -> &'static str {
        // cdk picks its SQL dialect and migrations by this name.
        Sqlite::name()
    }

    async fn execute(&self, statement: Statement) -> Result<usize, Error> {
        if self.holds_turn() {
            return self.sqlite.execute(statement).await;
        }
        let _turn = self.take_turn().await;
        self.sqlite.execute(statement).await
    }

    async fn fetch_one(&self, statement: Statement) -> Result<Option<Vec<Column>>, Error> {
        self.sqlite.fetch_one(statement).await
    }

    async fn fetch_all(&self, statement: Statement) -> Result<Vec<Vec<Column>>, Error> {
        self.sqlite.fetch_all(statement).await
    }

    async fn pluck(&self, statement: Statement) -> Result<Option<Column>, Error> {
        self.sqlite.pluck(statement).await
    }

    async fn batch(&self, statement: Statement) -> Result<(), Error> {
        if self.holds_turn() {
            return self.sqlite.batch(statement).await;
        }
        let _turn = self.take_turn().await;
        self.sqlite.batch(statement).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use cdk_common::database::{KVStoreDatabase, MintDatabase, MintQuotesDatabase};

    use super::*;

    /// The stall this module exists for, on one thread: a second writer comes while the
    /// first transaction waits to be polled again. In SQLite's busy handler the second writer
    /// would keep the only thread for 10 s and fail with "database is locked".
    #[tokio::test(flavor = "current_thread")]
    async fn a_writer_waits_for_an_open_transaction_without_taking_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(open(dir.path().join("mint.sqlite")).await.unwrap());

        let mut first = db.begin_transaction().await.unwrap();
        first.kv_write("soko", "test", "first", b"1").await.unwrap();
        let second = tokio::spawn({
            let db = Arc::clone(&db);
            async move {
                let started = std::time::Instant::now();
                let mut tx = db.begin_transaction().await?;
                tx.kv_write("soko", "test", "second", b"2").await?;
                tx.commit().await?;
                Ok::<_, Error>(started.elapsed())
            }
        });
        // The second writer runs now, while the first transaction is open.
        tokio::time::sleep(Duration::from_millis(50)).await;
        first.commit().await.unwrap();

        let waited = second.await.unwrap().expect("the second write succeeds");
        assert!(
            waited < Duration::from_secs(5),
            "the second writer waited {waited:?}: it slept in SQLite, not on the turn"
        );
        assert_eq!(
            db.kv_read("soko", "test", "first").await.unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            db.kv_read("soko", "test", "second").await.unwrap(),
            Some(b"2".to_vec())
        );
    }

    /// A transaction dropped without commit is rolled back by a task cdk spawns; the turn
    /// comes back with it, and the next writer goes ahead.
    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_transaction_gives_the_turn_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path().join("mint.sqlite")).await.unwrap();

        let mut dropped = db.begin_transaction().await.unwrap();
        dropped
            .kv_write("soko", "test", "dropped", b"x")
            .await
            .unwrap();
        drop(dropped);

        let mut tx = tokio::time::timeout(Duration::from_secs(5), db.begin_transaction())
            .await
            .expect("the turn came back")
            .unwrap();
        tx.kv_write("soko", "test", "kept", b"y").await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(db.kv_read("soko", "test", "dropped").await.unwrap(), None);
        assert_eq!(
            db.kv_read("soko", "test", "kept").await.unwrap(),
            Some(b"y".to_vec())
        );
    }

    /// cdk's one write outside a transaction (a quote's check time) takes the turn too: it
    /// waits for an open transaction instead of sleeping on the only thread.
    #[tokio::test(flavor = "current_thread")]
    async fn a_write_outside_a_transaction_waits_for_the_turn_too() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(open(dir.path().join("mint.sqlite")).await.unwrap());

        let mut open_tx = db.begin_transaction().await.unwrap();
        open_tx
            .kv_write("soko", "test", "open", b"1")
            .await
            .unwrap();
        let check_time = tokio::spawn({
            let db = Arc::clone(&db);
            async move {
                let started = std::time::Instant::now();
                // No such quote: the UPDATE still needs SQLite's write lock.
                let updated = db
                    .try_update_mint_quote_last_checked(&cdk_common::QuoteId::new(), 1, 0)
                    .await?;
                Ok::<_, Error>((updated, started.elapsed()))
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        open_tx.commit().await.unwrap();

        let (updated, waited) = check_time.await.unwrap().expect("the write succeeds");
        assert!(!updated, "there is no such quote");
        assert!(
            waited < Duration::from_secs(5),
            "the write waited {waited:?}: it slept in SQLite, not on the turn"
        );
    }
}
