//! `poll(2)`: readiness of a few fds at once, with a timeout (the `poll` model, and waits on
//! pipes and wakers).

use super::readiness::{Interest, Readiness};
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// One fd to poll and what poll said of it: the kernel's `pollfd`, named in portable terms.
#[derive(Debug, Clone, Copy)]
#[repr(transparent)]
pub(crate) struct PollFd(libc::pollfd);

impl PollFd {
    /// Asks about `fd` (a negative fd is left out) for `interest`.
    pub(crate) fn new(fd: RawFd, interest: Interest) -> Self {
        let mut events = 0;
        if interest.read {
            events |= libc::POLLIN;
        }
        if interest.write {
            events |= libc::POLLOUT;
        }
        PollFd(libc::pollfd {
            fd,
            events,
            revents: 0,
        })
    }

    /// What the last [`poll`] said of the fd.
    pub(crate) fn readiness(&self) -> Readiness {
        let r = self.0.revents;
        Readiness {
            readable: r & libc::POLLIN != 0,
            writable: r & libc::POLLOUT != 0,
            hung_up: r & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0,
        }
    }

    /// True when the last [`poll`] said anything of the fd.
    pub(crate) fn ready(&self) -> bool {
        self.readiness().any()
    }
}

/// Waits until one of `fds` is ready or `timeout` passes (`None`: no timeout); returns how many
/// are ready. A signal's interruption is retried.
pub(crate) fn poll(fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: `fds` is a live, exclusively borrowed slice of PollFd, which is a pollfd
        // (repr(transparent)), of the length given.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr().cast::<libc::pollfd>(),
                fds.len() as libc::nfds_t,
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

/// Asks whether `fd` is readable.
pub(crate) fn pollin(fd: RawFd) -> PollFd {
    PollFd::new(fd, Interest::READ)
}
