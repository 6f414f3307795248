//! The platform calls that std does not offer, in one thin module: `unsafe` lives here only
//! (and in `uring.rs` beside it, for io_uring).

pub(crate) mod uring;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Waits until one of `fds` is ready or `timeout` passes (`None`: no timeout); returns how many
/// are ready. A signal's interruption is retried.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: `fds` is a live, exclusively borrowed slice of pollfd of the length given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A pollfd asking for readability of `fd`.
pub(crate) fn pollin(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// An epoll instance (epoll(7)), closed on drop.
#[derive(Debug)]
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative return is a new fd we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and nothing else owns it.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a live epoll_event; the kernel copies it and keeps no pointer.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for `events`, reporting them with `token`.
    pub(crate) fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Stops watching `fd`.
    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for events (`None`: no timeout); returns how many were written into `events`.
    pub(crate) fn wait(
        &self,
        events: &mut [libc::epoll_event],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        loop {
            // SAFETY: `events` is a live, exclusively borrowed buffer of the length given.
            let n = unsafe {
                libc::epoll_wait(
                    self.0.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    ms,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// A set of fds for select(2), which can only hold fds below `FD_SETSIZE`.
pub(crate) struct FdSet(libc::fd_set);

impl FdSet {
    /// The largest fd select can watch, plus one.
    pub(crate) const CAPACITY: RawFd = libc::FD_SETSIZE as RawFd;

    pub(crate) fn new() -> Self {
        // SAFETY: fd_set is plain bits; FD_ZERO initialises all of them.
        unsafe {
            let mut set = std::mem::MaybeUninit::<libc::fd_set>::uninit();
            libc::FD_ZERO(set.as_mut_ptr());
            FdSet(set.assume_init())
        }
    }

    /// Adds `fd`. Panics past `CAPACITY`: callers check first, since writing past the set
    /// would corrupt memory.
    pub(crate) fn insert(&mut self, fd: RawFd) {
        assert!(
            (0..Self::CAPACITY).contains(&fd),
            "fd {fd} does not fit an fd_set"
        );
        // SAFETY: `fd` is within the set's capacity, checked above.
        unsafe { libc::FD_SET(fd, &mut self.0) }
    }

    pub(crate) fn contains(&self, fd: RawFd) -> bool {
        // SAFETY: FD_ISSET reads the bit of an fd within capacity, checked here.
        (0..Self::CAPACITY).contains(&fd) && unsafe { libc::FD_ISSET(fd, &self.0) }
    }
}

/// select(2) over read and write sets of fds below `nfds` (`None`: no timeout).
pub(crate) fn select(
    nfds: RawFd,
    read: &mut FdSet,
    write: &mut FdSet,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let mut tv = timeout.map(|t| libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    });
    let tvp = tv
        .as_mut()
        .map_or(std::ptr::null_mut(), |t| t as *mut libc::timeval);
    // SAFETY: both sets are live and exclusively borrowed; `tvp` is null or points to `tv`.
    let n = unsafe { libc::select(nfds, &mut read.0, &mut write.0, std::ptr::null_mut(), tvp) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(n as usize)
}

/// Gives the calling thread a file table of its own (`unshare(CLONE_FILES)`): a copy of the
/// process's, so every fd open now stays usable here, while the fds this thread opens from now
/// on are its alone. On every system call on an fd, Linux takes and drops a reference to the
/// file (two atomic operations) when the table is shared by threads, and skips both when it is
/// one thread's own: for a reactor that does a `recv` and a `send` per message, that is its
/// hottest path. Best effort: where it is refused, the thread keeps the shared table.
pub(crate) fn own_fd_table() {
    // SAFETY: unshare takes flags only; it changes no memory of ours.
    let refused = unsafe { libc::unshare(libc::CLONE_FILES) } != 0;
    if refused {
        tracing::debug!(error = %io::Error::last_os_error(), "unshare(CLONE_FILES) refused");
    }
}

/// Raises this process's soft limit on open files to its hard limit, so a server can hold as
/// many connections as the system allows (the soft limit is often 1024).
pub(crate) fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a live rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// `IP_BIND_ADDRESS_NO_PORT`: a socket bound to an address before `connect` gets its port at
/// connect, chosen for the whole address pair. Best effort (an old kernel ignores it).
pub(crate) fn bind_address_no_port(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads a live c_int of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The most files this process may have open (the soft limit, after [`raise_fd_limit`]).
pub(crate) fn fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a live rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    }
}

/// A value in memory shared with every process forked after it is made (`MAP_SHARED`), so the
/// workers of the process models count into the same counters. `T` must be plain data: atomics,
/// no pointers (a pointer would mean different things in different processes).
pub(crate) struct SharedMem<T> {
    ptr: std::ptr::NonNull<T>,
}

// SAFETY: the memory is only ever reached through `&T`, so sharing it is as safe as sharing `T`.
unsafe impl<T: Sync> Send for SharedMem<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for SharedMem<T> {}

impl<T: Default + Sync> SharedMem<T> {
    pub(crate) fn new() -> io::Result<Self> {
        let len = std::mem::size_of::<T>().max(1);
        // SAFETY: an anonymous mapping takes no fd or address of ours; failure is MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(p.cast::<T>()).ok_or_else(io::Error::last_os_error)?;
        // SAFETY: the mapping is fresh, page-aligned (so aligned for T) and at least T's size.
        unsafe { ptr.as_ptr().write(T::default()) };
        Ok(SharedMem { ptr })
    }
}

impl<T> std::ops::Deref for SharedMem<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: initialised in `new`, mapped until drop, and only shared as `&T`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Drop for SharedMem<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; T is plain data with nothing to drop.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), std::mem::size_of::<T>().max(1)) };
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
pub(crate) fn signal_child(pid: libc::pid_t, signal: i32) {
    // SAFETY: kill takes no pointers; `pid` is a child we have not reaped, so it is ours.
    unsafe { libc::kill(pid, signal) };
}

/// Sends `signal` to every process of the process group `pgid`: a server the lab started in
/// a group of its own, with every worker and child it forked.
pub(crate) fn signal_group(pgid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: killpg takes no pointers; the group is one this process created.
    if unsafe { libc::killpg(pgid as libc::pid_t, signal) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Stop requests delivered by SIGTERM to this (forked) process, and where the handler goes.
static STOP_SIGNALS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static WAKE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);
static CUT_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only async-signal-safe work here: atomics, write(2) and shutdown(2).
    STOP_SIGNALS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    act_on_stop();
}

/// Wakes the worker's loop and cuts the child's connection, where those are set.
fn act_on_stop() {
    use std::sync::atomic::Ordering::SeqCst;
    let wake = WAKE_FD.load(SeqCst);
    if wake >= 0 {
        // SAFETY: writes one byte from a live array to the waker socket.
        unsafe { libc::write(wake, [1u8].as_ptr().cast(), 1) };
    }
    let cut = CUT_FD.load(SeqCst);
    if cut >= 0 {
        // SAFETY: shutdown takes no pointers; it wakes the thread blocked on this connection.
        unsafe { libc::shutdown(cut, libc::SHUT_RDWR) };
    }
}

/// First thing in a forked child: SIGTERM becomes a counted stop request, and SIGINT is
/// ignored (Ctrl-C on a terminal reaches every process of the group; the parent decides what
/// it means). This replaces the handlers inherited from the parent, which would report to a
/// thread the child does not have, so a SIGTERM that comes before the child is ready is
/// counted, not lost; [`route_stop_signals`] then acts on it.
pub(crate) fn take_over_stop_signals() {
    // SAFETY: installs a handler that does only async-signal-safe work (see on_stop_signal),
    // and SIG_IGN; the sigaction struct is live and zero-initialised before use.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}

/// In a forked child that has taken over its stop signals: from now on a SIGTERM also writes a
/// byte to `wake` and shuts down the connection `cut` (each if given). One that came earlier
/// does so now.
pub(crate) fn route_stop_signals(wake: Option<RawFd>, cut: Option<RawFd>) {
    use std::sync::atomic::Ordering::SeqCst;
    WAKE_FD.store(wake.unwrap_or(-1), SeqCst);
    CUT_FD.store(cut.unwrap_or(-1), SeqCst);
    if stop_signals() > 0 {
        act_on_stop(); // a stop that came before the fds were set
    }
}

/// How many stop signals this process has received through [`route_stop_signals`].
pub(crate) fn stop_signals() -> u32 {
    STOP_SIGNALS.load(std::sync::atomic::Ordering::SeqCst)
}

/// Receives one datagram with `MSG_TRUNC`, so the length returned is the datagram's whole
/// length even when it was cut to fit `buf`.
pub(crate) fn recv_datagram(
    socket: &socket2::Socket,
    buf: &mut [u8],
) -> io::Result<(usize, socket2::SockAddr)> {
    // SAFETY: an initialised `[u8]` is a valid `[MaybeUninit<u8>]` of the same length, and
    // recvfrom only ever writes initialised bytes into it.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    socket.recv_from_with_flags(uninit, libc::MSG_TRUNC)
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

/// Keeps the calling thread (and the threads and processes it starts afterwards) on `cpus`
/// (sched_setaffinity(2)), so a load generator and the server it measures do not share cores.
pub(crate) fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    pin(0, cpus)
}

/// Starts `command`'s process on `cpus` only: the affinity is set between fork and exec, so
/// every thread and process the program starts stays there too.
pub(crate) fn pin_command(command: &mut std::process::Command, cpus: Vec<usize>) {
    use std::os::unix::process::CommandExt;
    let set = cpu_set(&cpus);
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // sched_setaffinity system call on a set built before the fork: no allocation, no lock.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&cpu| cpu < libc::CPU_SETSIZE as usize) {
        // SAFETY: `cpu` is below CPU_SETSIZE, so the bit is inside the set.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

fn pin(pid: libc::pid_t, cpus: &[usize]) -> io::Result<()> {
    let set = cpu_set(cpus);
    // SAFETY: `set` is a live cpu_set_t of the size given; the kernel only reads it.
    if unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs this process may run on (sched_getaffinity(2)), in order.
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: as in `cpu_set`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live, writable cpu_set_t of the size given.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: every index is below CPU_SETSIZE; CPU_ISSET only reads the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// A pipe (read end, write end), both close-on-exec.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec copy of `fd`, numbered `min` or above.
pub(crate) fn dup_above(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes no pointers; EBADF if `fd` is not open.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the copy was just made and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Takes ownership of an fd this process inherited (a socket the system passed at `fd`), and
/// marks it close-on-exec so nothing this process runs inherits it in turn.
pub(crate) fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on an fd number only reads or sets its flags; EBADF if it is not open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd is open (checked above) and was passed to this process by the socket
    // activation protocol, which `transport::inherited` reads once and then forgets (it removes
    // LISTEN_FDS), so nothing else in the process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The user id of a Unix socket's peer (`SO_PEERCRED`).
pub(crate) fn peer_uid(fd: RawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the live `cred` and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Standard error without a lock: each `write` is one write(2) system call (retried until
/// whole). std's `io::stderr()` takes a process-wide lock; a process model's child forked while
/// another thread of its parent held that lock would hang the first time it logged. Logging
/// goes through this instead, and tracing formats each event into one buffer first, so lines
/// from several threads or processes do not interleave.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawStderr;

impl io::Write for RawStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is a live slice of the length given; fd 2 is read, never owned.
            let n = unsafe { libc::write(2, buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod raw_stderr_tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    #[test]
    fn a_child_forked_while_stderr_is_locked_can_still_log() {
        // Another thread holds std's stderr lock across the fork, as a logging parent might.
        let (locked, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _guard = io::stderr().lock();
                locked.wait();
                release.wait();
            });
            locked.wait();
            let pid = match fork().unwrap() {
                Forked::Child => {
                    let ok = RawStderr.write_all(b"logged from a forked child\n").is_ok();
                    exit_child(if ok { 0 } else { 1 });
                }
                Forked::Parent(pid) => pid,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut status = 0;
            let done = loop {
                // SAFETY: waitpid on our own child, writing into a live int.
                let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if r == pid {
                    break true;
                }
                if Instant::now() > deadline {
                    signal_child(pid, libc::SIGKILL);
                    // SAFETY: as above; reaps the killed child.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    break false;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            release.wait();
            assert!(done, "the child hung on a lock its parent held");
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        });
    }
}
