//! Why a store could not be used, in words that say what to do.

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one the store knows.
    #[error("`{0}` is not a store URL: expected sqlite://PATH or mysql://USER:PASS@HOST:PORT/DB (or --no-store)")]
    Url(String),
    /// The database's schema is newer than this binary's.
    #[error("the store's schema is version {found}, newer than this switchboard's ({known}): upgrade switchboard or use another store")]
    SchemaTooNew {
        /// The version in the database.
        found: i64,
        /// The newest version this binary knows.
        known: i64,
    },
    /// Another instance held the schema migration's lock for longer than this one waited.
    #[error("store {url}: another switchboard has been migrating its schema for over {waited} s; start again once it is done")]
    MigrationBusy {
        /// The store (password hidden).
        url: String,
        /// How long this one waited, in seconds.
        waited: u64,
    },
    /// The MySQL/MariaDB server refused or failed.
    #[error("store {url}: {}", super::mysql::describe(source))]
    Mysql {
        /// The store (password hidden).
        url: String,
        /// What the server said.
        source: ::mysql::Error,
    },
    /// The store's writer thread could not be started.
    #[error("cannot start the store's writer thread: {0}")]
    Writer(#[source] std::io::Error),
    /// The database refused or failed.
    #[error("store {url}: {source}")]
    Database {
        /// The store (password hidden).
        url: String,
        /// What the database said.
        source: rusqlite::Error,
    },
}
