//! Stop signals in a forked child: SIGTERM counted and routed to the child's own wakers.

use std::os::fd::RawFd;

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
