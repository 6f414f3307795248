//! The lab behind `switchboard lab`: every model side by side under the same load, on the
//! reader's own machine, with what each costs: the plan's "IO models" lesson, measured.
//!
//! A matrix of servers x connections x sizes x depths; each cell is measured `rounds` times,
//! the servers interleaved round by round (A B C A B C, so a slow minute of a shared machine
//! does not land on one server), and the medians are kept. Each measurement starts a fresh
//! server (a real `switchboard serve` child, or a reference command) in a process group of its
//! own, loads it with [`crate::bench`] and reads the server's CPU time and memory from
//! `/proc` at the edges of the measured window. With `pin`, the server and the load generator
//! run on disjoint cores, so the server's CPU time is its own.
//!
//! [`write()`] turns the results into `results.json`, `results.md`, plots (SVG and PNG) and one
//! self-contained `index.html`.
//!
//! The rooms: `config` (what to measure, in what order), `run` (a measurement: a server,
//! the bench, `/proc`), `results` (measurements and their medians), `server` (starting a
//! model or a reference), `proc` (reading a process's CPU time and memory), `report` and
//! `plot` (the tables, plots and page).

mod config;
mod plot;
mod proc;
mod report;
mod results;
mod run;
mod server;

pub use config::{LabConfig, PYTHON_REFERENCE};
pub use report::write;
pub use results::{Cell, LabResults, Machine, Measurement, MEMORY_NOISE};
pub use run::{run, LabObserver};
pub use server::LabServer;
