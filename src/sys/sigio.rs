//! Signal-driven IO: the kernel sends this thread a signal when a socket turns ready, and the
//! thread waits for signals instead of polling sockets.
//!
//! Each socket is armed with `fcntl`: `F_SETOWN_EX` names this thread as the one to signal,
//! `F_SETSIG` a real-time signal, which the kernel queues with the socket's descriptor and what
//! happened (readable, writable, hung up) in its `siginfo`; `O_ASYNC` turns it on. The signal is
//! blocked in this thread, so it is never delivered to a handler: [`SignalDriven::wait`] takes
//! it from the queue with `sigtimedwait`. Real-time signals queue up to `RLIMIT_SIGPENDING`; past
//! it the kernel sends a plain `SIGIO` instead, which carries nothing: then every socket must be
//! checked ([`Ready::Overflow`]).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

// Linux's fcntl commands for signal-driven IO (asm-generic values: x86, ARM, RISC-V), which
// the libc crate does not name for glibc.
const F_SETSIG: libc::c_int = 10;
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

/// `struct f_owner_ex`: who `F_SETOWN_EX` makes a socket's signals go to.
#[repr(C)]
struct OwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// The start of a `siginfo_t` sent for a socket (`SIGPOLL`'s layout): the band of poll events
/// (unused: the socket itself says what happened) and the descriptor.
#[repr(C)]
struct PollInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    band: libc::c_long,
    fd: libc::c_int,
}

/// What a signal said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    /// This descriptor turned ready (readable, writable, hung up or failed: the socket says
    /// which when it is read and written).
    Fd(RawFd),
    /// The real-time queue was full and signals were lost: any socket may be ready.
    Overflow,
}

/// This thread's signal-driven IO: the signal its sockets are armed with, blocked here.
pub(crate) struct SignalDriven {
    signal: libc::c_int,
    waited: libc::sigset_t,
    tid: libc::pid_t,
}

impl SignalDriven {
    /// Blocks this thread's readiness signal (a real-time one) and `SIGIO` in this thread, so
    /// both wait in its queue for [`wait`](SignalDriven::wait). They stay blocked afterwards: a
    /// socket armed here and still open (a listener handed to a reload) may signal again.
    pub(crate) fn for_this_thread() -> io::Result<SignalDriven> {
        // The fourth real-time signal above the C library's own: unused by tokio and
        // signal-hook, which take none.
        let signal = libc::SIGRTMIN() + 4;
        // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask reads it
        // and writes no old set (null).
        let waited = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigaddset(&mut set, libc::SIGIO);
            let failed = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if failed != 0 {
                return Err(io::Error::from_raw_os_error(failed));
            }
            set
        };
        // SAFETY: gettid takes nothing and cannot fail.
        let tid = unsafe { libc::gettid() };
        Ok(SignalDriven {
            signal,
            waited,
            tid,
        })
    }

    /// Arms `fd`: from now on the kernel signals this thread when it turns ready. It is made
    /// non-blocking too. What was ready before is not signalled: read it once after arming.
    pub(crate) fn arm(&self, fd: RawFd) -> io::Result<()> {
        let owner = OwnerEx {
            kind: F_OWNER_TID,
            pid: self.tid,
        };
        // SAFETY: fcntl on a descriptor the caller owns; F_SETOWN_EX reads the live struct.
        unsafe {
            check(libc::fcntl(fd, F_SETOWN_EX, &owner as *const OwnerEx))?;
            check(libc::fcntl(fd, F_SETSIG, self.signal))?;
            // Off, then on: the kernel records which descriptor number to name in the signal
            // only when O_ASYNC is turned on, and a socket handed over by a reload is still on
            // under the number it had in the old server.
            let flags = check(libc::fcntl(fd, libc::F_GETFL))? | libc::O_NONBLOCK;
            check(libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_ASYNC))?;
            check(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC))?;
        }
        Ok(())
    }

    /// Waits up to `timeout` (`None`: until one comes) for a signal, then takes every other
    /// one queued, appending what each said to `ready`. Returns with `ready` unchanged when the
    /// time ran out or another signal interrupted the wait.
    pub(crate) fn wait(&self, timeout: Option<Duration>, ready: &mut Vec<Ready>) -> io::Result<()> {
        let mut wait = timeout;
        loop {
            match self.take(wait)? {
                Some(r) => ready.push(r),
                None => return Ok(()),
            }
            wait = Some(Duration::ZERO); // the rest of the queue, without sleeping
        }
    }

    /// One signal from the queue, waiting up to `timeout`; `None` if none came.
    fn take(&self, timeout: Option<Duration>) -> io::Result<Option<Ready>> {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
        // SAFETY: the set and the timespec are live; the kernel writes one siginfo_t into
        // `info`, which is zeroed and large enough.
        let (signo, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let signo = libc::sigtimedwait(&self.waited, &mut info, ts_ptr);
            (signo, info)
        };
        if signo < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(e),
            };
        }
        if signo != self.signal {
            return Ok(Some(Ready::Overflow));
        }
        // SAFETY: a signal sent for a socket (F_SETSIG) carries SIGPOLL's fields, which
        // PollInfo lays out as the C structure does; siginfo_t is larger than it.
        let poll = unsafe { &*(&info as *const libc::siginfo_t).cast::<PollInfo>() };
        Ok(Some(Ready::Fd(poll.fd)))
    }
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}
