//! Where a store is: its URL, read from the command line and shown with the password hidden.

use crate::store::error::StoreError;
use std::fmt;

use std::path::PathBuf;
use std::str::FromStr;

/// Where the store is: `sqlite://PATH` (relative to the working directory, or absolute with a
/// third slash: `sqlite:///var/lib/sb.db`) or `mysql://USER:PASS@HOST:PORT/DB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A MySQL or MariaDB database.
    Mysql(String),
}

/// The default store: `switchboard.db` in the working directory.
pub const DEFAULT_STORE: &str = "sqlite://switchboard.db";

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::Url(s.to_string()));
            }
            Ok(StoreUrl::Sqlite(PathBuf::from(path)))
        } else if s.starts_with("mysql://") {
            Ok(StoreUrl::Mysql(s.to_string()))
        } else {
            Err(StoreError::Url(s.to_string()))
        }
    }
}

impl StoreUrl {
    /// The URL as given, password included, to hand to another process (`Display` hides
    /// the password).
    pub fn full(&self) -> String {
        match self {
            StoreUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            StoreUrl::Mysql(url) => url.clone(),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            // The password stays out of logs.
            StoreUrl::Mysql(url) => match (url.find("://"), url.rfind('@')) {
                (Some(a), Some(b)) if b > a => write!(f, "mysql://…@{}", &url[b + 1..]),
                _ => f.write_str(url),
            },
        }
    }
}
