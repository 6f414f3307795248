//! `select(2)`: the `select` model's fd sets, bounded by `FD_SETSIZE`.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

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
