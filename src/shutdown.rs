//! Graceful shutdown: stop accepting, let open connections finish for the drain time, then
//! close what is left.
//!
//! [`StopHandle::stop`] (a signal, or a library user) wakes every accept loop through a
//! socket pair that turns readable, and stays so: the waker. Models that block a thread per connection register each stream here; a watchdog
//! thread shuts down those still open when the drain time is up, which wakes their threads out
//! of `read` or `write` (a client that never reads would otherwise hold a thread forever).

use crate::transport::Stream;
use std::collections::HashMap;
use std::io::Write;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Asks a running server to stop. Cloned freely; the first [`stop`](StopHandle::stop) starts a
/// graceful stop, a second one closes the remaining connections at once.
#[derive(Clone, Debug)]
pub struct StopHandle(pub(crate) Arc<Lifecycle>);

impl StopHandle {
    /// Stops accepting and starts the drain; called again, ends the drain now.
    pub fn stop(&self) {
        self.0.stop();
    }

    /// True once a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.0.is_stopping()
    }
}

/// A server's stop and drain state, shared by its model and the watchdog.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    stopping: AtomicBool,
    /// Set when the drain time is up: connections still open are being closed.
    forced: AtomicBool,
    /// Stop signals already turned into stops (see `take_signals`).
    signals_seen: std::sync::atomic::AtomicU32,
    /// Written once at a stop; its other end is what accept loops and reactors watch.
    waker: UnixStream,
    woken: UnixStream,
    drain: Duration,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    deadline: Option<Instant>,
    finished: bool,
    open: HashMap<u64, Arc<Stream>>,
}

/// Keeps a stream registered while its connection is served; unregisters on drop.
pub(crate) struct Registration {
    lifecycle: Arc<Lifecycle>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut st = self.lifecycle.lock();
        st.open.remove(&self.id);
        self.lifecycle.changed.notify_all();
    }
}

impl Lifecycle {
    pub(crate) fn new(drain: Duration) -> std::io::Result<Self> {
        let (waker, woken) = UnixStream::pair()?;
        waker.set_nonblocking(true)?;
        Ok(Lifecycle {
            stopping: AtomicBool::new(false),
            forced: AtomicBool::new(false),
            signals_seen: Default::default(),
            waker,
            woken,
            drain,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not wedge shutdown: the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stop(&self) {
        let mut st = self.lock();
        let now = Instant::now();
        st.deadline = Some(match st.deadline {
            None => now + self.drain,
            Some(_) => now, // asked twice: don't wait
        });
        self.stopping.store(true, Ordering::SeqCst);
        // One byte makes the other end readable; nobody reads it, so it stays readable. A full
        // buffer (a stop asked many times) still leaves it readable.
        let _ = (&self.waker).write(&[1]);
        self.changed.notify_all();
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// The drain time this lifecycle was made with.
    pub(crate) fn drain(&self) -> Duration {
        self.drain
    }

    /// In a forked worker, turns each SIGTERM received since the last call into a
    /// [`stop`](Lifecycle::stop): the first drains, a second cuts.
    pub(crate) fn take_signals(&self) {
        let received = crate::sys::stop_signals();
        while self.signals_seen.load(Ordering::Relaxed) < received {
            self.signals_seen.fetch_add(1, Ordering::Relaxed);
            self.stop();
        }
    }

    /// The end of the waker a signal handler writes to.
    pub(crate) fn waker_write_fd(&self) -> RawFd {
        self.waker.as_raw_fd()
    }

    /// True once the drain time is up and open connections are being cut.
    pub(crate) fn is_forced(&self) -> bool {
        self.forced.load(Ordering::Relaxed)
    }

    /// The fd that turns readable when a stop is asked for; accept loops poll it.
    pub(crate) fn waker_fd(&self) -> RawFd {
        self.woken.as_raw_fd()
    }

    /// The watched end of the waker, for an event loop that wants to own a handle to it.
    pub(crate) fn waker_stream(&self) -> std::io::Result<UnixStream> {
        self.woken.try_clone()
    }

    /// Registers a connection's stream so the watchdog can cut it when the drain time is up.
    pub(crate) fn register(self: &Arc<Self>, id: u64, stream: &Arc<Stream>) -> Registration {
        let mut st = self.lock();
        if self.is_forced() {
            let _ = stream.shutdown(Shutdown::Both); // too late to be served
        }
        st.open.insert(id, stream.clone());
        Registration {
            lifecycle: self.clone(),
            id,
        }
    }

    /// Waits until every registered connection has closed. The watchdog cuts them at the
    /// deadline; a thread stuck in a service is given one more second, then left behind.
    pub(crate) fn wait_closed(&self) {
        let mut st = self.lock();
        while !st.open.is_empty() {
            let limit = st.deadline.map(|d| d + Duration::from_secs(1));
            let now = Instant::now();
            if limit.is_some_and(|l| now >= l) {
                tracing::warn!(
                    open = st.open.len(),
                    "connections still open after the drain; leaving them"
                );
                return;
            }
            let wait = limit.map_or(Duration::from_millis(100), |l| l - now);
            st = self
                .changed
                .wait_timeout(st, wait.min(Duration::from_millis(100)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Starts the watchdog: once a stop is asked for, it waits for the registered connections
    /// until the deadline, then shuts down those left. It ends when [`finish`](Lifecycle::finish)
    /// is called.
    pub(crate) fn spawn_watchdog(self: &Arc<Self>) -> std::io::Result<thread::JoinHandle<()>> {
        let me = self.clone();
        crate::sys::spawn_settled(
            thread::Builder::new().name("drain-watchdog".into()),
            move || me.watch(),
        )
    }

    fn watch(&self) {
        let mut st = self.lock();
        loop {
            if st.finished {
                return;
            }
            if let Some(deadline) = st.deadline {
                let now = Instant::now();
                if st.open.is_empty() && now < deadline {
                    // Nothing to cut yet; a connection that starts late will be cut at the deadline.
                } else if now >= deadline {
                    self.forced.store(true, Ordering::SeqCst);
                    if !st.open.is_empty() {
                        tracing::info!(
                            open = st.open.len(),
                            "drain time is up: closing open connections"
                        );
                    }
                    for stream in st.open.values() {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                    // Wait for `finish`; late registrations are cut in `register`.
                    while !st.finished {
                        st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                    return;
                }
                let wait = deadline.saturating_duration_since(now);
                st = self
                    .changed
                    .wait_timeout(st, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            } else {
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// When the drain ends, once a stop was asked for.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.lock().deadline
    }

    /// The server has returned: the watchdog may end.
    pub(crate) fn finish(&self) {
        self.lock().finished = true;
        self.changed.notify_all();
    }
}
