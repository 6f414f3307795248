//! File descriptors: the process's limit, a thread's own table, pipes, and fds passed across
//! exec (socket activation, a reload's hand-over).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

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
