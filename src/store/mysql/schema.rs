//! Connecting to MySQL/MariaDB, and the schema brought up to date.

use crate::store::error::StoreError;
use crate::store::handle::MIGRATION_TIMEOUT;
use crate::store::mysql::Mysql;
use crate::store::schema::{MIGRATIONS, VERSION};
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder};
use std::time::Duration;

/// How long the server may take to answer a recording server's store before it gives up on
/// it (and spools).
pub(super) const TIMEOUT: Duration = Duration::from_secs(30);

/// How long it may take to answer a read (`sessions`, `stats`, `messages`, `runs`): `stats`
/// adds up every session, 36 s for 21 million here.
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(600);

impl Mysql {
    /// Connects and brings the schema up to date, for a recording server: a statement not
    /// answered within 30 s fails (and the server spools).
    pub fn open(url: &str, display: String) -> Result<Mysql, StoreError> {
        Mysql::open_within(url, display, TIMEOUT)
    }

    /// As [`open`](Mysql::open), for reading: a statement may take up to 10 minutes.
    pub fn open_to_read(url: &str, display: String) -> Result<Mysql, StoreError> {
        Mysql::open_within(url, display, READ_TIMEOUT)
    }

    pub(super) fn open_within(
        url: &str,
        display: String,
        timeout: Duration,
    ) -> Result<Mysql, StoreError> {
        let opts = Opts::from_url(url).map_err(|_| StoreError::Url(display.clone()))?;
        let opts: Opts = OptsBuilder::from_opts(opts)
            .tcp_connect_timeout(Some(Duration::from_secs(5)))
            .read_timeout(Some(timeout))
            .write_timeout(Some(TIMEOUT))
            .into();
        let (conn, bulk) = connect(&opts).map_err(|source| StoreError::Mysql {
            url: display.clone(),
            source,
        })?;
        let mut store = Mysql {
            opts,
            url: display,
            conn: Some(conn),
            bulk,
        };
        store.migrate(MIGRATION_TIMEOUT)?;
        Ok(store)
    }

    /// Applies the migrations the database lacks, one instance at a time (a named lock).
    ///
    /// On a connection of its own, whose reads may take up to [`MIGRATION_TIMEOUT`]: a
    /// migration that fills a table from a large one (version 5 reads every session) can
    /// take minutes, longer than the store's usual [`TIMEOUT`]. Another instance's migration is
    /// waited for up to `wait` (at start, as long).
    pub(super) fn migrate(&mut self, wait: Duration) -> Result<(), StoreError> {
        let url = self.url.clone();
        let err = |source| StoreError::Mysql {
            url: url.clone(),
            source,
        };
        let opts = OptsBuilder::from_opts(self.opts.clone()).read_timeout(Some(MIGRATION_TIMEOUT));
        let conn = &mut Conn::new(opts).map_err(err)?;
        let locked: Option<Option<i64>> = conn
            .query_first(format!(
                "SELECT GET_LOCK('switchboard_migrate', {})",
                wait.as_secs()
            ))
            .map_err(err)?;
        if locked.flatten() != Some(1) {
            return Err(StoreError::MigrationBusy {
                url: url.clone(),
                waited: wait.as_secs(),
            });
        }
        let result = (|| {
            conn.query_drop("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                .map_err(err)?;
            let found: Option<Option<i64>> = conn
                .query_first("SELECT MAX(version) FROM schema_version")
                .map_err(err)?;
            let found = found.flatten().unwrap_or(0);
            if found > VERSION {
                return Err(StoreError::SchemaTooNew {
                    found,
                    known: VERSION,
                });
            }
            if found > 0 && found < VERSION {
                tracing::info!(store = %url, from = found, to = VERSION, "migrating the store's schema");
            }
            for (i, statements) in MIGRATIONS.iter().enumerate().skip(found as usize) {
                for sql in *statements {
                    conn.query_drop(*sql).map_err(err)?;
                }
                conn.query_drop("DELETE FROM schema_version").map_err(err)?;
                conn.exec_drop(
                    "INSERT INTO schema_version (version) VALUES (?)",
                    (i as i64 + 1,),
                )
                .map_err(err)?;
            }
            Ok(())
        })();
        let _ = conn.query_drop("SELECT RELEASE_LOCK('switchboard_migrate')");
        result
    }

    /// The schema version of the database.
    pub fn version(&mut self) -> Result<i64, StoreError> {
        let url = self.url.clone();
        let v: Option<Option<i64>> = self
            .conn()?
            .query_first("SELECT MAX(version) FROM schema_version")
            .map_err(|source| StoreError::Mysql { url, source })?;
        Ok(v.flatten().unwrap_or(0))
    }
}

/// Connects, and says whether the server is MariaDB (whose bulk execution [`insert_rows`] uses).
pub(super) fn connect(opts: &Opts) -> mysql::Result<(Conn, bool)> {
    let mut conn = Conn::new(opts.clone())?;
    let version: Option<String> = conn.query_first("SELECT VERSION()")?;
    let mariadb = version.is_some_and(|v| v.contains("MariaDB"));
    Ok((conn, mariadb))
}
