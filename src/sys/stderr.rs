//! Standard error without std's lock, safe to write from a forked child.

use std::io;

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
mod tests {
    use super::*;
    use crate::sys::{exit_child, fork, signal_child, Forked, Signal};
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
                    signal_child(pid, Signal::Kill);
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
