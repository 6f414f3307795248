//! Restarts that drop nothing: on SIGHUP a server starts a new copy of itself (the same
//! executable path and arguments, so a new binary put in its place is what starts: an upgrade
//! in place) and hands it the listening socket as fd 3, as systemd's socket activation passes
//! one. Only once the new copy says it is serving does the old one stop accepting and drain its
//! connections; clients that connect meanwhile wait in the socket's one backlog, which both
//! processes accept from, so none is refused. This is nginx's binary upgrade, made one signal.

use crate::shutdown::StopHandle;
use crate::transport::{HANDED_OVER, HANDOVER};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// The fd the new copy finds the listening socket at (`SD_LISTEN_FDS_START`).
const SOCKET_FD: RawFd = 3;
/// The fd of the pipe the new copy says it is serving on.
const READY_FD: RawFd = 4;

static EXECUTABLE: OnceLock<PathBuf> = OnceLock::new();

/// Notes this process's executable path, at start: `/proc/self/exe` names the file that was
/// run, which an upgrade in place may since have replaced; the path is what starts the new one.
pub fn remember_executable() {
    if let Ok(exe) = std::env::current_exe() {
        let _ = EXECUTABLE.set(exe);
    }
}

/// A successor said it is serving: this process must stop accepting and drain.
#[derive(Debug)]
pub struct Successor {
    /// Its process id.
    pub pid: u32,
}

/// How often a reload waiting for its successor looks whether it was told to give up.
const LOOK: Duration = Duration::from_millis(100);

/// Starts a new copy of this process, hands it the socket `listening` and waits (at most
/// `patience`) until it says it is serving. Until it has, nothing changes here: a copy that
/// fails to start, exits (its exit status is in the error) or says nothing in time is an
/// error, and this process serves on. `abandon` is asked every 100 ms meanwhile: once it says
/// so (the server is stopping), the copy is stopped and the reload given up at once.
pub fn start_successor(
    listening: RawFd,
    patience: Duration,
    abandon: impl Fn() -> bool,
) -> io::Result<Successor> {
    let exe = EXECUTABLE
        .get()
        .cloned()
        .map_or_else(std::env::current_exe, Ok)?;
    let (ready_read, ready_write) = crate::sys::pipe()?;
    // Copies above the fds the child's are moved to, so neither is overwritten by the other.
    let socket = crate::sys::dup_above(listening, 10)?;
    let ready = crate::sys::dup_above(ready_write.as_raw_fd(), 10)?;
    drop(ready_write);
    let (socket_fd, ready_fd) = (socket.as_raw_fd(), ready.as_raw_fd());
    let mut command = Command::new(&exe);
    command
        .args(std::env::args_os().skip(1))
        .env(HANDOVER, READY_FD.to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .stdin(Stdio::null());
    // SAFETY: between fork and exec the child only calls dup2, which is async-signal-safe;
    // dup2 leaves the copies without close-on-exec, so they (and only they) cross the exec.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(socket_fd, SOCKET_FD) < 0 || libc::dup2(ready_fd, READY_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", exe.display())))?;
    drop((socket, ready)); // the child has its own; the pipe now ends when the child's does
    let pid = child.id();
    let ready = std::fs::File::from(ready_read);
    let began = std::time::Instant::now();
    let failure = loop {
        let mut fds = [crate::sys::pollin(ready.as_raw_fd())];
        if crate::sys::poll(&mut fds, Some(LOOK))? > 0 {
            if matches!((&ready).read(&mut [0u8; 1]), Ok(1)) {
                break None; // it serves
            }
            // The pipe ended without a word: the copy exited (or closed it), say how.
            let status = child.wait()?;
            break Some(format!(
                "the new server (pid {pid}) exited before it served ({status}); its log says why"
            ));
        }
        if let Some(status) = child.try_wait()? {
            break Some(format!(
                "the new server (pid {pid}) exited before it served ({status}); its log says why"
            ));
        }
        if abandon() {
            break Some(format!(
                "the server is stopping: the new server (pid {pid}) was stopped before it served"
            ));
        }
        if began.elapsed() >= patience {
            break Some(format!(
                "the new server ({}, pid {pid}) did not say it was serving within {patience:?}; it was stopped, and its log says why",
                exe.display()
            ));
        }
    };
    if let Some(why) = failure {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::other(why));
    }
    // The socket file (of a Unix socket) is the successor's now.
    HANDED_OVER.store(true, Ordering::SeqCst);
    Ok(Successor { pid })
}

/// Says "serving" to the server that handed this one its socket, if one did; its drain begins.
pub fn serving() {
    if let Some(fd) = crate::transport::take_ready_pipe() {
        let _ = std::io::Write::write_all(&mut std::fs::File::from(fd), b"1");
    }
}

/// SIGHUP's reloads of one server, one at a time, each in a thread of its own, so a stop that
/// comes meanwhile is acted on at once (and abandons the reload).
#[derive(Clone)]
pub struct Reloads {
    stop: StopHandle,
    listening: RawFd,
    /// The reload under way, if any: its thread, which a stopping server waits for (it stops
    /// a new server that has not served yet, rather than leave it running alone).
    under_way: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Reloads {
    /// Reloads of the server that `stop` stops, listening on `listening`
    /// (`Server::listener_fd`).
    pub fn new(stop: StopHandle, listening: RawFd) -> Reloads {
        Reloads {
            stop,
            listening,
            under_way: Arc::default(),
        }
    }

    /// SIGHUP: a new copy of this server takes over the socket; once it serves, this one
    /// stops accepting and drains. If it cannot start, this one serves on. Ignored while the
    /// server stops or another reload is under way.
    pub fn reload(&self) {
        if self.stop.is_stopping() {
            tracing::info!("SIGHUP while stopping: ignored");
            return;
        }
        let mut under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
        if under_way.as_ref().is_some_and(|t| !t.is_finished()) {
            tracing::info!("SIGHUP while a reload is under way: ignored");
            return;
        }
        tracing::info!("SIGHUP: starting a new server on the same socket");
        let (stop, listening) = (self.stop.clone(), self.listening);
        let spawned = std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || {
                let abandon = || stop.is_stopping();
                match start_successor(listening, Duration::from_secs(30), abandon) {
                    Ok(next) => {
                        tracing::info!(
                            pid = next.pid,
                            "SIGHUP: the new server is serving; no longer accepting, draining open connections"
                        );
                        stop.stop();
                    }
                    Err(e) => tracing::error!(error = %e, "SIGHUP: the new server did not take over; serving on"),
                }
            });
        match spawned {
            Ok(thread) => *under_way = Some(thread),
            Err(e) => tracing::error!(error = %e, "SIGHUP: cannot start the reload; serving on"),
        }
    }

    /// Waits for the reload under way, if any: call it once the server has stopped (the
    /// reload sees the stop within 0.1 s).
    pub fn finish(&self) {
        let thread = self
            .under_way
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}
