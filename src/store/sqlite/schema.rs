//! Opening an SQLite store: its pragmas, and the schema brought up to date.

use crate::store::error::StoreError;
use crate::store::handle::MIGRATION_TIMEOUT;
use crate::store::schema::{MIGRATIONS, SQLITE_ONLY, VERSION};
use crate::store::sqlite::Sqlite;
use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

/// How long a write waits for another process's (prefork, fork) before it fails.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl Sqlite {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Sqlite, StoreError> {
        Sqlite::open_within(path, MIGRATION_TIMEOUT)
    }

    /// [`Sqlite::open`], waiting up to `wait` for another instance's schema migration.
    pub(super) fn open_within(path: &Path, wait: Duration) -> Result<Sqlite, StoreError> {
        let url = format!("sqlite://{}", path.display());
        let err = |source| StoreError::Database {
            url: url.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        // Several processes (prefork, fork) write at once: wait for each other, briefly.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // 16 KiB pages for a new store (an existing one keeps its own): a batch of messages
        // is a quarter of the pages, page writes and WAL frames, a quarter fewer µs of the
        // writer's per message. Set before WAL, which fixes the page size.
        conn.pragma_update(None, "page_size", 16384).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        let mut store = Sqlite { conn, url };
        store.migrate(wait)?;
        Ok(store)
    }

    /// Applies the migrations the database lacks; refuses a schema newer than this binary's.
    ///
    /// A store that is up to date is only read. One that is not is migrated in one write
    /// transaction, which another instance's migration holds for as long as it runs (version 4
    /// copies every message): that is waited for up to `wait`, not the busy timeout's 10 s.
    pub(super) fn migrate(&mut self, wait: Duration) -> Result<(), StoreError> {
        let url = self.url.clone();
        let err = |source| StoreError::Database {
            url: url.clone(),
            source,
        };
        let known = |found| match found {
            found if found > VERSION => Err(StoreError::SchemaTooNew {
                found,
                known: VERSION,
            }),
            found => Ok(found),
        };
        if known(schema_version(&self.conn).map_err(err)?)? == VERSION {
            return Ok(());
        }
        self.conn.busy_timeout(wait).map_err(err)?;
        let began = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate);
        let tx = match began {
            Ok(tx) => tx,
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
                self.conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
                return Err(StoreError::MigrationBusy {
                    url,
                    waited: wait.as_secs(),
                });
            }
            Err(e) => return Err(err(e)),
        };
        tx.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .map_err(err)?;
        // Again, now that no other instance can be migrating: it may have done so meanwhile.
        let found = known(schema_version(&tx).map_err(err)?)?;
        if found > 0 && found < VERSION {
            // Version 4 copies the `messages` table once: long for a store of many.
            tracing::info!(store = %url, from = found, to = VERSION, "migrating the store's schema");
        }
        for (i, statements) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            for sql in statements.iter().chain(SQLITE_ONLY[i]) {
                tx.execute_batch(sql).map_err(err)?;
            }
            tx.execute("DELETE FROM schema_version", []).map_err(err)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [i as i64 + 1],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// The schema version of the database.
    pub fn version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .map_err(self.err())
    }
}

/// The schema version `conn` sees, 0 for a database switchboard has not set up yet.
fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    let version: Option<i64> =
        conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?;
    Ok(version.unwrap_or(0))
}
