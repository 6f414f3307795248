//! `switchboard lesson`: the plan as runnable lessons, one per lesson of the plan, in its
//! order. Each runs an experiment on the learner's own machine (loopback, port 0, files of its
//! own), says what happened as it happens, then what it shows and which switchboard code does
//! it right. Each is bounded (under about 30 s) and cleans up after itself: servers it starts
//! are stopped and reaped, its files removed, also when it fails or is interrupted.
//!
//! The rooms: this file lists the lessons and holds what every lesson runs with ([`Class`]);
//! each lesson is a file of its own.

mod backlog;
mod c10k;
mod calls;
mod glue;
mod io_models;
mod layers;
mod loops;
mod one_at_a_time;
mod phone;
mod sendall;
mod socketserver;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// One lesson of the plan.
pub struct Lesson {
    /// Its name on the command line.
    pub name: &'static str,
    /// The plan's part it belongs to, and its title.
    pub title: &'static str,
    /// What it shows, in one line.
    pub summary: &'static str,
    run: fn(&mut Class) -> Result<Taught, LessonError>,
}

/// What a lesson concluded.
pub struct Taught {
    /// What the experiment shows, in a few plain sentences.
    pub shows: String,
    /// Where switchboard does it right.
    pub code: Vec<&'static str>,
}

/// Every lesson, in the plan's order.
pub const LESSONS: &[Lesson] = &[
    phone::LESSON,
    layers::LESSON,
    calls::LESSON,
    sendall::LESSON,
    glue::LESSON,
    loops::LESSON,
    backlog::LESSON,
    one_at_a_time::LESSON,
    io_models::LESSON,
    c10k::LESSON,
    socketserver::LESSON,
    store::LESSON,
];

/// The lesson named `name`.
pub fn find(name: &str) -> Option<&'static Lesson> {
    LESSONS.iter().find(|l| l.name == name)
}

/// Why a lesson could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum LessonError {
    /// It was interrupted (Ctrl-C); what it had started is cleaned up.
    #[error("interrupted; everything the lesson started is stopped and removed")]
    Interrupted,
    /// It needs something this machine or user does not have.
    #[error("{0}")]
    Needs(String),
    /// Something failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The experiment did not come out as the lesson expects: the machine behaves otherwise.
    #[error("the experiment did not show what it should: {0}")]
    Unexpected(String),
}

/// What a lesson ran and found: its steps as said, its figures, and its conclusion.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    /// The lesson's name.
    pub lesson: &'static str,
    /// What happened, a line a step.
    pub steps: Vec<String>,
    /// The figures it measured, by name.
    pub figures: BTreeMap<String, serde_json::Value>,
    /// What it shows.
    pub shows: String,
    /// Where switchboard does it right.
    pub code: Vec<&'static str>,
}

/// What a lesson runs with: where to say what happens, the figures it keeps, a directory of
/// its own, the switchboard executable, and whether it was interrupted.
pub struct Class<'a> {
    say: &'a mut dyn FnMut(&str),
    steps: Vec<String>,
    figures: BTreeMap<String, serde_json::Value>,
    dir: PathBuf,
    exe: PathBuf,
    interrupted: Arc<AtomicBool>,
    /// The store the data lesson records into, if the learner named one.
    store: Option<crate::store::StoreUrl>,
}

impl Class<'_> {
    /// Says a step, as it happens.
    pub fn say(&mut self, line: impl Into<String>) {
        let line = line.into();
        (self.say)(&line);
        self.steps.push(line);
    }

    /// Keeps a figure, for `--json`.
    pub fn figure(&mut self, name: &str, value: impl serde::Serialize) {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.figures.insert(name.to_string(), value);
    }

    /// Keeps a measured cell's figures, named `MODEL_CONNS_FIGURE`: replies per second, and per
    /// reply the CPU, system calls and context switches; memory per connection.
    pub fn cell_figures(&mut self, cell: &crate::lab::Cell) {
        let key = |figure: &str| format!("{}_{}_{figure}", cell.model, cell.conns);
        self.figure(&key("msgs_per_s"), cell.msgs_per_s);
        self.figure(&key("cpu_us_per_msg"), cell.cpu_us_per_msg);
        self.figure(&key("syscalls_per_msg"), cell.syscalls_per_msg);
        self.figure(&key("switches_per_msg"), cell.switches_per_msg);
        self.figure(&key("rss_bytes_per_conn"), cell.rss_bytes_per_conn);
    }

    /// The lesson's own directory, removed when it ends.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An error if the lesson was interrupted: call it between steps.
    pub fn check(&self) -> Result<(), LessonError> {
        if self.interrupted.load(Relaxed) {
            Err(LessonError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Starts `switchboard serve ADDR ARGS` (no store unless asked), stopped when the returned
    /// guard is dropped; returns once it listens, with the address it listens on.
    pub fn serve(&mut self, addr: &str, args: &[&str]) -> Result<Served, LessonError> {
        let mut child = Command::new(&self.exe)
            .arg("serve")
            .arg(addr)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let mut served = Served {
            child,
            addr: String::new(),
        };
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        match line.trim().strip_prefix("listening on ") {
            Some(addr) => served.addr = addr.to_string(),
            None => {
                return Err(LessonError::Unexpected(format!(
                    "switchboard serve {addr} did not start"
                )))
            }
        }
        Ok(served)
    }
}

/// Measures `servers` with the lab, one round of `duration` per connection count, saying each
/// measurement as it starts; the cells, in order.
fn measure(
    c: &mut Class,
    servers: Vec<crate::lab::LabServer>,
    conns: Vec<usize>,
    duration: Duration,
) -> Result<Vec<crate::lab::Cell>, LessonError> {
    struct Say<'s, 'a> {
        class: &'s mut Class<'a>,
    }
    impl crate::lab::LabObserver for Say<'_, '_> {
        fn measuring(&mut self, server: &str, conns: usize, _: usize, done: usize, total: usize) {
            self.class.say(format!(
                "[{}/{total}] {server} at {conns} connections...",
                done + 1
            ));
        }
        fn stopped(&self) -> bool {
            self.class.check().is_err()
        }
    }
    let mut config = crate::lab::LabConfig::new(c.exe.clone());
    config.servers = servers;
    config.conns = conns;
    config.rounds = 1;
    config.duration = duration;
    config.warmup = Duration::from_millis(500);
    config.fit_max_conns();
    c.check()?;
    let results = crate::lab::run(&config, "switchboard lesson".into(), &mut Say { class: c });
    c.check()?;
    Ok(results.cells)
}

/// A `switchboard serve` a lesson started: stopped (SIGTERM, then SIGKILL) and reaped when
/// dropped.
pub struct Served {
    child: Child,
    /// Where it listens, as it said (`tcp://127.0.0.1:PORT`).
    pub addr: String,
}

impl Served {
    /// The socket address it listens on, for a tcp:// server.
    pub fn sockaddr(&self) -> std::net::SocketAddr {
        self.addr
            .trim_start_matches("tcp://")
            .parse()
            .expect("a tcp:// address")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `lesson` with `exe` (the switchboard executable) for the servers it starts (the data
/// lesson recording into `store`, or an SQLite file of its own), saying each step to `say`;
/// `interrupted` stops it between steps.
pub fn run(
    lesson: &Lesson,
    exe: &Path,
    store: Option<crate::store::StoreUrl>,
    interrupted: Arc<AtomicBool>,
    say: &mut dyn FnMut(&str),
) -> Result<Record, LessonError> {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-lesson-{}-{}",
        lesson.name,
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let mut class = Class {
        say,
        steps: Vec::new(),
        figures: BTreeMap::new(),
        dir: dir.clone(),
        exe: exe.to_path_buf(),
        interrupted,
        store,
    };
    let taught = (lesson.run)(&mut class);
    let _ = std::fs::remove_dir_all(&dir);
    let taught = taught?;
    Ok(Record {
        lesson: lesson.name,
        steps: class.steps,
        figures: class.figures,
        shows: taught.shows,
        code: taught.code,
    })
}
