//! The spool: where a recording server's batches go while its store cannot take them (a
//! database away, a disk full, a file locked or read-only), an SQLite file of the same schema
//! in a directory of the operator's (`--spool-dir`). Newer batches queue behind what is
//! spooled, so order is kept; the spool is replayed into the store, oldest first, as soon as
//! the store writes again (tried once a second), at the server's stop, and otherwise by the
//! next server started with the same spool directory. Records carry their keys, so one that
//! reached the store before it was spooled lands once.

use super::sqlite::{SpoolRows, Sqlite};
use super::{Backend, Record, RecorderStats, StoreError, Written};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a spooling writer tries the store again.
const RETRY: Duration = Duration::from_secs(1);
/// Records replayed per transaction, at most.
const REPLAY_BATCH: usize = 512;
/// Spool files are named `switchboard-spool-INSTANCE.db`.
const PREFIX: &str = "switchboard-spool-";

/// A store whose writes go to a local spool while it fails.
pub struct Spooled {
    store: Box<dyn Backend>,
    dir: PathBuf,
    /// The spool, while it holds records, and its file.
    spool: Option<(Sqlite, PathBuf)>,
    last_try: Option<Instant>,
}

impl Spooled {
    /// `store`, spooling into `dir` while it fails.
    pub fn new(store: Box<dyn Backend>, dir: &Path) -> Self {
        Spooled {
            store,
            dir: dir.to_path_buf(),
            spool: None,
            last_try: None,
        }
    }

    /// True while records wait in the spool.
    pub fn is_spooling(&self) -> bool {
        self.spool.is_some()
    }

    /// The spool, opened (created) on first use.
    fn spool(&mut self, instance: &str) -> Result<&mut Sqlite, StoreError> {
        if self.spool.is_none() {
            let name: String = instance
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let path = self.dir.join(format!("{PREFIX}{name}.db"));
            tracing::warn!(spool = %path.display(), "the store cannot take records: spooling them locally until it can");
            self.spool = Some((Sqlite::open(&path)?, path));
        }
        Ok(&mut self.spool.as_mut().expect("opened above").0)
    }

    /// Moves what the spool holds into the store, oldest first; stops at the first failure.
    fn replay(&mut self, instance: &str) -> Result<(), StoreError> {
        let Some((mut spool, path)) = self.spool.take() else {
            return Ok(());
        };
        match drain(&mut *self.store, &mut spool, instance) {
            Ok(()) => {
                drop(spool);
                tracing::info!(spool = %path.display(), "spool replayed into the store");
                remove(&path);
                Ok(())
            }
            Err(e) => {
                self.spool = Some((spool, path));
                Err(e)
            }
        }
    }
}

/// Replays into `store` the spools in `dir` that servers which have since stopped left there
/// (the store was still failing when they stopped). A spool whose server still runs on this
/// host is its own to replay, and is left alone.
pub fn replay_leftovers(store: &mut dyn Backend, dir: &Path) -> Result<(), StoreError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(PREFIX) && name.ends_with(".db")) {
            continue;
        }
        let path = entry.path();
        let mut spool = Sqlite::open(&path)?;
        let instances = spool.spooled_instances()?;
        if instances.iter().any(|i| still_running(i)) {
            continue;
        }
        for instance in &instances {
            drain(store, &mut spool, instance)?;
        }
        drop(spool);
        tracing::info!(spool = %path.display(), "a stopped server's spool replayed into the store");
        remove(&path);
    }
    Ok(())
}

/// Writes one instance's spooled records into `store` and forgets them, in order.
fn drain(store: &mut dyn Backend, spool: &mut Sqlite, instance: &str) -> Result<(), StoreError> {
    loop {
        let (rows, batch): (SpoolRows, Vec<Record>) = spool.oldest(instance, REPLAY_BATCH)?;
        if batch.is_empty() {
            return Ok(());
        }
        store.write(instance, &batch)?;
        spool.forget(&rows)?;
    }
}

/// Removes a spool and the files SQLite keeps beside it.
fn remove(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// True if the instance (`host:pid:start`) is a process still running on this host.
fn still_running(instance: &str) -> bool {
    let mut parts = instance.split(':');
    let (host, pid) = (parts.next(), parts.next());
    let here = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    host != Some(here.trim()) || pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

impl Backend for Spooled {
    fn write(&mut self, instance: &str, batch: &[Record]) -> Result<Written, StoreError> {
        if self.spool.is_some() && self.last_try.is_none_or(|t| t.elapsed() >= RETRY) {
            self.last_try = Some(Instant::now());
            if let Err(e) = self.replay(instance) {
                tracing::debug!(error = %e, "the store still cannot take records");
            }
        }
        if self.spool.is_none() {
            match self.store.write(instance, batch) {
                Ok(written) => return Ok(written),
                Err(e) => {
                    tracing::warn!(error = %e, "store write failed");
                    self.last_try = Some(Instant::now());
                }
            }
        }
        self.spool(instance)?.write(instance, batch)?;
        Ok(Written {
            spooled: batch.len() as u64,
        })
    }

    fn stop_server(
        &mut self,
        instance: &str,
        stopped: i64,
        stats: &RecorderStats,
    ) -> Result<(), StoreError> {
        // A last chance for what is spooled: replayed now if the store takes records again.
        self.replay(instance)?;
        self.store.stop_server(instance, stopped, stats)
    }
}
