//! `epoll(7)`: the `epoll` model's readiness queue.

use super::readiness::{Interest, Readiness};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// How an fd is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// Told while it is ready (a listener, a waker).
    Level,
    /// Told when it becomes ready, and of the peer's close: the reactor reads and writes until
    /// the socket says EAGAIN (a connection).
    Edge,
    /// Level-triggered, and one waiter woken per event among the epolls that share the fd
    /// (`EPOLLEXCLUSIVE`: workers sharing a listener).
    Exclusive,
}

/// Room for the events one [`Epoll::wait`] reports, and those it reported.
pub(crate) struct Events {
    buffer: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    /// Room for `n` events a wait.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Events {
            buffer: vec![libc::epoll_event { events: 0, u64: 0 }; n.max(1)],
            len: 0,
        }
    }

    /// The last wait's events: each one's token and what the kernel said.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, Readiness)> + '_ {
        self.buffer[..self.len].iter().map(|ev| {
            let bits = ev.events;
            let token = ev.u64;
            let readiness = Readiness {
                readable: bits & libc::EPOLLIN as u32 != 0,
                writable: bits & libc::EPOLLOUT as u32 != 0,
                hung_up: bits & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0,
            };
            (token, readiness)
        })
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

    /// Watches `fd` for `interest`, as `trigger` says, reporting it with `token`.
    pub(crate) fn add(
        &self,
        fd: RawFd,
        interest: Interest,
        trigger: Trigger,
        token: u64,
    ) -> io::Result<()> {
        let mut events = match trigger {
            Trigger::Level => 0,
            // The peer's close is asked for too: no read is left to find it otherwise.
            Trigger::Edge => libc::EPOLLET | libc::EPOLLRDHUP,
            Trigger::Exclusive => libc::EPOLLEXCLUSIVE,
        } as u32;
        if interest.read {
            events |= libc::EPOLLIN as u32;
        }
        if interest.write {
            events |= libc::EPOLLOUT as u32;
        }
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Stops watching `fd`.
    pub(crate) fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for events (`None`: no timeout) and puts them in `events`, which it empties
    /// first; returns how many there are.
    pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        events.len = 0;
        loop {
            let room = &mut events.buffer;
            // SAFETY: `room` is a live, exclusively borrowed buffer of the length given.
            let n = unsafe {
                libc::epoll_wait(self.0.as_raw_fd(), room.as_mut_ptr(), room.len() as i32, ms)
            };
            if n >= 0 {
                events.len = n as usize;
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}
