//! `poll(2)`: readiness of a few fds at once, with a timeout (the `poll` model, and waits on
//! pipes and wakers).

use std::io;
use std::os::fd::RawFd;
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
