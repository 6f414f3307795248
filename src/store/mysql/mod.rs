//! The MySQL/MariaDB backend: many server instances, on one machine or several, record into
//! one database. When the database is unreachable or goes away, a recording server's batches
//! go to a local spool ([`super::spool`]) and are replayed once it answers again; its primary
//! keys make a replayed record land once even if it had reached the database before.

mod reader;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use crate::store::error::StoreError;
use mysql::{Conn, Opts};
use schema::{connect, READ_TIMEOUT, TIMEOUT};

/// A MySQL or MariaDB store.
pub struct Mysql {
    opts: Opts,
    url: String,
    conn: Option<Conn>,
    /// Whether the server is MariaDB, which inserts a batch by bulk execution (see
    /// [`insert_rows`]).
    bulk: bool,
}

impl Mysql {
    fn err(&self) -> impl Fn(mysql::Error) -> StoreError + '_ {
        |source| StoreError::Mysql {
            url: self.url.clone(),
            source,
        }
    }

    fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        if self.conn.is_none() {
            let (conn, bulk) = connect(&self.opts).map_err(self.err())?;
            self.conn = Some(conn);
            self.bulk = bulk;
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }
}

/// A driver error in words, with what to do where that is known: a timed-out socket says
/// that the server did not answer in time (the driver's own text is "Resource temporarily
/// unavailable"), a refused login or a missing database says what to check.
pub(crate) fn describe(e: &mysql::Error) -> String {
    let io: Option<&std::io::Error> = match e {
        mysql::Error::IoError(io) => Some(io),
        mysql::Error::CodecError(codec) => {
            std::error::Error::source(codec).and_then(|io| io.downcast_ref())
        }
        _ => None,
    };
    match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => format!(
            "the server did not answer in time ({} s for a server's records, {} s for a read: \
             a stalled server, or a read of a very large table)",
            TIMEOUT.as_secs(),
            READ_TIMEOUT.as_secs()
        ),
        _ => match e {
            mysql::Error::MySqlError(m) => {
                let hint = match m.code {
                    1044 | 1045 => {
                        ": check the user and password in the URL, and the user's grants on the \
                         database"
                    }
                    1049 => ": create it first (CREATE DATABASE), or name one that exists",
                    _ => "",
                };
                format!("{} (error {}){hint}", m.message, m.code)
            }
            mysql::Error::DriverError(mysql::DriverError::CouldNotConnect(Some((
                addr,
                why,
                _,
            )))) => {
                format!("could not connect to {addr}: {why} (is MySQL or MariaDB listening there?)")
            }
            mysql::Error::IoError(io) => io.to_string(),
            _ => e.to_string(),
        },
    }
}

/// Column `i` of a row, converted; NULL (or a value that does not convert) is the default.
fn col<T: mysql::prelude::FromValue + Default>(row: &mut mysql::Row, i: usize) -> T {
    row.take_opt(i).and_then(Result::ok).unwrap_or_default()
}
