//! What the process models (`fork`, `prefork`) share: forking a child that runs a closure,
//! reaping children as they end, and stopping them with the server.

use crate::shutdown::Lifecycle;
use crate::sys::{self, ChildExit, Forked, Pid, Signal};
use std::collections::HashSet;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How long children get, after the drain, between the polite SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// A parent's children, and a SIGCHLD pipe that turns readable when one ends, so the parent
/// can wait for children and sockets in one `poll`.
pub(super) struct Children {
    pids: HashSet<Pid>,
    sigchld: UnixStream,
    _sigchld_writer: UnixStream,
    registration: signal_hook::SigId,
}

impl Children {
    pub(super) fn new() -> io::Result<Self> {
        let (sigchld, writer) = UnixStream::pair()?;
        sigchld.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let registration = signal_hook::low_level::pipe::register(
            signal_hook::consts::SIGCHLD,
            writer.try_clone()?,
        )?;
        Ok(Children {
            pids: HashSet::new(),
            sigchld,
            _sigchld_writer: writer,
            registration,
        })
    }

    /// Readable when a child may have ended: poll it, then [`reap`](Children::reap).
    pub(super) fn fd(&self) -> RawFd {
        self.sigchld.as_raw_fd()
    }

    pub(super) fn len(&self) -> usize {
        self.pids.len()
    }

    pub(super) fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.pids.iter().copied()
    }

    /// Forks a child that runs `child` and exits with its status; a panic in it exits 101
    /// instead of unwinding into the parent's code, which the child has a copy of. The child
    /// gets SIGTERM if the parent dies. Returns the child's pid, in the parent.
    pub(super) fn spawn(&mut self, child: impl FnOnce() -> i32) -> io::Result<Pid> {
        let parent = std::process::id() as Pid;
        match sys::fork()? {
            Forked::Child => {
                sys::take_over_stop_signals();
                sys::die_with_parent(parent);
                let code =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
                sys::exit_child(code)
            }
            Forked::Parent(pid) => {
                self.pids.insert(pid);
                Ok(pid)
            }
        }
    }

    /// Collects every child that has ended (no zombies are left); returns them with how they
    /// ended. A child that crashed is logged; the parent goes on.
    pub(super) fn reap(&mut self) -> Vec<(Pid, ChildExit)> {
        let mut drain = [0u8; 64];
        while matches!((&self.sigchld).read(&mut drain), Ok(n) if n > 0) {}
        let mut ended = Vec::new();
        while let Some((pid, exit)) = sys::reap_child() {
            if self.pids.remove(&pid) {
                match exit {
                    ChildExit::Code(0) => {}
                    ChildExit::Code(code) => {
                        tracing::warn!(pid, code, "child exited with an error")
                    }
                    ChildExit::Signal(signal) => {
                        tracing::warn!(pid, signal, "child killed by a signal")
                    }
                }
                ended.push((pid, exit));
            }
        }
        ended
    }

    /// Sends `signal` to every child.
    pub(super) fn signal_all(&self, signal: Signal) {
        for pid in self.pids() {
            sys::signal_child(pid, signal);
        }
    }

    /// After a stop: waits for every child to end. `pass_stop`: each SIGTERM the parent gets
    /// is passed on (prefork's workers drain themselves); otherwise the children are left to
    /// finish and get SIGTERM, which cuts their connection, only when the drain time is up.
    /// Those still alive a grace period after that are killed.
    pub(super) fn stop(&mut self, lifecycle: &Lifecycle, pass_stop: bool) -> io::Result<()> {
        if pass_stop {
            self.signal_all(Signal::Term);
        }
        let mut cut_at: Option<Instant> = None;
        loop {
            self.reap();
            if self.pids.is_empty() {
                return Ok(());
            }
            if lifecycle.is_forced() && cut_at.is_none() {
                cut_at = Some(Instant::now());
                self.signal_all(Signal::Term); // the drain is over: cut what is left
            }
            if cut_at.is_some_and(|t| t.elapsed() > GRACE) {
                tracing::warn!(
                    children = self.pids.len(),
                    "children outlived the drain; killing them"
                );
                self.signal_all(Signal::Kill);
            }
            let mut fd = [sys::pollin(self.fd())];
            sys::poll(&mut fd, Some(Duration::from_millis(50)))?;
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.registration);
    }
}
