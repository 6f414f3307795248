//! Counting what a task does, with perf events: the kernel counts the system calls a task
//! makes (the `raw_syscalls:sys_enter` tracepoint) or its context switches, and those of every
//! thread and process it starts afterwards. Needs root (or `CAP_PERFMON`), and tracefs for the
//! tracepoint's id.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What a [`Counter`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// System calls entered.
    Syscalls,
    /// Context switches.
    ContextSwitches,
}

/// `struct perf_event_attr`, its first 64 bytes (`PERF_ATTR_SIZE_VER0`): all a count needs.
#[repr(C)]
struct Attr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_COUNT_SW_CONTEXT_SWITCHES: u64 = 3;
/// `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `attr.inherit`: count the tasks the task starts from now on too.
const INHERIT: u64 = 1 << 1;

/// A running count of one task's events.
pub(crate) struct Counter {
    fd: OwnedFd,
}

impl Counter {
    /// Starts counting `what` for the task `tid` (a thread id; a process's main thread is its
    /// pid) and the tasks it starts from now on.
    pub(crate) fn open(tid: i32, what: Counted) -> io::Result<Counter> {
        let (kind, config) = match what {
            Counted::Syscalls => (PERF_TYPE_TRACEPOINT, syscall_tracepoint()?),
            Counted::ContextSwitches => (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CONTEXT_SWITCHES),
        };
        let attr = Attr {
            kind,
            size: std::mem::size_of::<Attr>() as u32,
            config,
            sample_period: 0,
            sample_type: 0,
            read_format: 0,
            flags: INHERIT,
            wakeup_events: 0,
            bp_type: 0,
            config1: 0,
        };
        // SAFETY: perf_event_open reads the live attr; the fd it returns is owned at once.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const Attr,
                tid,
                -1,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor, owned from here.
        Ok(Counter {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    /// The count so far.
    pub(crate) fn read(&self) -> io::Result<u64> {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into the live u64.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut value as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if n != std::mem::size_of::<u64>() as isize {
            return Err(io::Error::last_os_error());
        }
        Ok(value)
    }
}

/// The id of the `raw_syscalls:sys_enter` tracepoint, from tracefs (mounted here if it is not
/// yet, as perf does).
fn syscall_tracepoint() -> io::Result<u64> {
    const ID: &str = "events/raw_syscalls/sys_enter/id";
    let roots = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    let read = || {
        roots
            .iter()
            .find_map(|root| std::fs::read_to_string(format!("{root}/{ID}")).ok())
    };
    let text = match read() {
        Some(text) => text,
        None => {
            // SAFETY: the strings are live and NUL-terminated; mount takes no other pointers.
            unsafe {
                libc::mount(
                    c"nodev".as_ptr(),
                    c"/sys/kernel/tracing".as_ptr(),
                    c"tracefs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            read().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "no tracefs: mount -t tracefs nodev /sys/kernel/tracing",
                )
            })?
        }
    };
    text.trim()
        .parse()
        .map_err(|_| io::Error::other("tracefs gave no tracepoint id"))
}
