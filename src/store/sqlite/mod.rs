//! The SQLite backend: an embedded database file, in WAL mode so readers (`sessions`, `stats`)
//! and the process models' writers share it.

mod reader;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

pub(crate) use writer::SpoolRows;

use crate::store::error::StoreError;
use rusqlite::Connection;

/// An SQLite store.
pub struct Sqlite {
    conn: Connection,
    url: String,
}

impl Sqlite {
    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Database {
            url: self.url.clone(),
            source,
        }
    }
}
