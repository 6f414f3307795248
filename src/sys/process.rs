//! Processes and threads: fork, reaping and signalling children, a child that dies with its
//! parent, and starting a thread only once it runs (so nothing forks while one is starting).

use std::io;
use std::os::fd::RawFd;

/// A process id.
pub(crate) type Pid = libc::pid_t;

/// The signals a server sends its children: a stop, and the end of one that outlived it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGTERM: stop gracefully (a second one cuts the drain).
    Term,
    /// SIGKILL: end now.
    Kill,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// Which side of a `fork` this is.
pub(crate) enum Forked {
    /// The parent, with the child's pid.
    Parent(libc::pid_t),
    /// The child: a copy of the process with only the thread that forked. It must not wait on
    /// a lock another thread may have held, and ends with [`exit_child`], never by returning.
    Child,
}

/// fork(2).
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own; what the child may do after
    // it is restricted as `Forked::Child` documents, and the callers keep to that.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Ends a forked child at once, without running the parent's exit handlers or flushing its
/// buffers a second time.
pub(crate) fn exit_child(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// Closes an fd this process holds but will never use again (a forked child's copy of the
/// listener, which would otherwise keep the port bound after the server is gone).
pub(crate) fn close_inherited(fd: RawFd) {
    // SAFETY: the caller owns this fd's copy and never uses it afterwards (a child that will
    // _exit without dropping the owner).
    unsafe { libc::close(fd) };
}

/// How a reaped child ended.
pub(crate) enum ChildExit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

/// Reaps one child that has ended, without waiting; `None` when none has.
pub(crate) fn reap_child() -> Option<(libc::pid_t, ChildExit)> {
    let mut status = 0;
    // SAFETY: waitpid writes the status into a live c_int.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let exit = if libc::WIFSIGNALED(status) {
        ChildExit::Signal(libc::WTERMSIG(status))
    } else {
        ChildExit::Code(libc::WEXITSTATUS(status))
    };
    Some((pid, exit))
}

/// Sends `signal` to a child of ours.
pub(crate) fn signal_child(pid: Pid, signal: Signal) {
    // SAFETY: kill takes no pointers; `pid` is a child we have not reaped, so it is ours.
    unsafe { libc::kill(pid, signal.number()) };
}

/// Sends `signal` to every process of the process group `pgid`: a server the lab started in
/// a group of its own, with every worker and child it forked.
pub(crate) fn signal_group(pgid: u32, signal: Signal) -> io::Result<()> {
    // SAFETY: killpg takes no pointers; the group is one this process created.
    if unsafe { libc::killpg(pgid as libc::pid_t, signal.number()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// In a forked child: asks for SIGTERM when the parent dies (`PR_SET_PDEATHSIG`), so a killed
/// parent leaves no orphaned workers behind; if the parent already died, exits now.
pub(crate) fn die_with_parent(parent: libc::pid_t) {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number, no pointers; getppid none.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
    }
}

/// Spawns a thread and returns once it has started running `f`.
///
/// Why: `fork` copies only the calling thread, and with it every lock as it stood. A thread
/// that is still starting holds std's thread-registration lock, and a child forked at that
/// instant would hang the first time it starts a thread of its own. The threads a forking
/// server keeps (signals, drain, store writer) are started this way, so none is mid-start
/// when a process model forks.
pub(crate) fn spawn_settled<T: Send + 'static>(
    builder: std::thread::Builder,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<std::thread::JoinHandle<T>> {
    let (started, settled) = std::sync::mpsc::sync_channel::<()>(1);
    let handle = builder.spawn(move || {
        let _ = started.send(());
        f()
    })?;
    let _ = settled.recv();
    Ok(handle)
}
