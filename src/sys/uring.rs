//! io_uring behind a small safe surface. The ring owns every buffer a submission points into,
//! and keeps it until the process is done with the ring, so the kernel never writes into
//! memory that was freed or moved: a reply is copied into the ring's send buffer (a few bytes
//! for a typical message) instead of lending the session's own.

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Bytes of each slot's receive and send buffers.
const BUF_SIZE: usize = 32 * 1024;

/// One finished submission.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    /// The token it was submitted with.
    pub(crate) token: u64,
    /// The syscall's result: a count or an fd, or a negated errno.
    pub(crate) result: i32,
    /// A multishot submission that will complete again.
    pub(crate) more: bool,
}

impl Completion {
    /// The result as an IO result.
    pub(crate) fn io(&self) -> io::Result<usize> {
        if self.result < 0 {
            Err(io::Error::from_raw_os_error(-self.result))
        } else {
            Ok(self.result as usize)
        }
    }
}

/// The buffers of one slot (a connection, or the datagram socket): the kernel's to write while
/// a submission on them is in flight.
struct Slot {
    recv: Box<[u8]>,
    send: Box<[u8]>,
    /// For a datagram receive: the sender's address and the message header pointing at it.
    from: Box<libc::sockaddr_storage>,
    iov: Box<libc::iovec>,
    msg: Box<libc::msghdr>,
}

impl Slot {
    fn new(recv_size: usize) -> Self {
        Slot {
            recv: vec![0; recv_size].into_boxed_slice(),
            send: vec![0; BUF_SIZE].into_boxed_slice(),
            // SAFETY: all-zero bytes are a valid sockaddr_storage, iovec and msghdr.
            from: Box::new(unsafe { std::mem::zeroed() }),
            iov: Box::new(unsafe { std::mem::zeroed() }),
            msg: Box::new(unsafe { std::mem::zeroed() }),
        }
    }
}

/// An io_uring and the buffers its submissions use.
pub(crate) struct Uring {
    ring: IoUring,
    slots: Vec<Slot>,
    in_flight: usize,
}

impl Uring {
    /// A ring with room for `entries` submissions at once. A kernel that refuses io_uring
    /// (too old, or disabled by `kernel.io_uring_disabled` or a seccomp filter) is an error
    /// that says so.
    pub(crate) fn new(entries: u32) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_cqsize(entries * 4)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries)
            .map_err(|e| io::Error::new(e.kind(), format!("io_uring is not available here ({e}); choose another --model, such as epoll")))?;
        Ok(Uring {
            ring,
            slots: Vec::new(),
            in_flight: 0,
        })
    }

    /// The slot's buffers, made on first use with a receive buffer of `recv_size` bytes.
    fn slot(&mut self, slot: usize, recv_size: usize) -> &mut Slot {
        while self.slots.len() <= slot {
            self.slots.push(Slot::new(recv_size));
        }
        &mut self.slots[slot]
    }

    /// Queues an entry whose pointers are into `self.slots` (or none): they stay valid until
    /// the ring is dropped, and `Drop` keeps them past that while anything is in flight.
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every pointer in `entry` is into a slot's boxed buffers, which are never
            // freed or moved while the ring lives (see Drop).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                self.in_flight += 1;
                return Ok(());
            }
            self.ring.submit()?; // the queue is full: hand it to the kernel and retry
        }
    }

    /// Accepts connections on `fd` until cancelled, each completing with `token` (multishot).
    pub(crate) fn accept_multi(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        self.push(
            opcode::AcceptMulti::new(types::Fd(fd))
                .flags(flags)
                .build()
                .user_data(token),
        )
    }

    /// Completes once `fd` is readable.
    pub(crate) fn poll_readable(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        self.push(
            opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
                .build()
                .user_data(token),
        )
    }

    /// Cancels the submission made with `target`.
    pub(crate) fn cancel(&mut self, target: u64, token: u64) -> io::Result<()> {
        self.push(opcode::AsyncCancel::new(target).build().user_data(token))
    }

    /// Receives from `fd` into the slot's buffer; read it with [`received`](Uring::received).
    pub(crate) fn recv(&mut self, slot: usize, fd: RawFd, token: u64) -> io::Result<()> {
        let buf = &mut self.slot(slot, BUF_SIZE).recv;
        let entry = opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), buf.len() as u32).build();
        self.push(entry.user_data(token))
    }

    /// The `n` bytes a receive on `slot` completed with.
    pub(crate) fn received(&self, slot: usize, n: usize) -> &[u8] {
        let recv = &self.slots[slot].recv;
        &recv[..n.min(recv.len())]
    }

    /// Sends the start of `data` (as much as the slot's buffer holds) on `fd`; returns how
    /// many bytes were queued. The completion says how many went.
    pub(crate) fn send(
        &mut self,
        slot: usize,
        fd: RawFd,
        data: &[u8],
        token: u64,
    ) -> io::Result<usize> {
        let buf = &mut self.slot(slot, BUF_SIZE).send;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        let entry = opcode::Send::new(types::Fd(fd), buf.as_ptr(), n as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        self.push(entry.user_data(token))?;
        Ok(n)
    }

    /// Receives one datagram from `fd` into the slot's buffer (a datagram's largest, if this
    /// is the slot's first use), with its sender; read them with
    /// [`received`](Uring::received) and [`received_from`](Uring::received_from). A datagram
    /// larger than the buffer completes with its whole length (`MSG_TRUNC`).
    pub(crate) fn recv_msg(&mut self, slot: usize, fd: RawFd, token: u64) -> io::Result<()> {
        let s = self.slot(slot, crate::transport::MAX_DATAGRAM);
        *s.iov = libc::iovec {
            iov_base: s.recv.as_mut_ptr().cast(),
            iov_len: s.recv.len(),
        };
        // SAFETY: an all-zero msghdr is valid; its fields are then set to live boxed buffers.
        *s.msg = unsafe { std::mem::zeroed() };
        s.msg.msg_name = (&mut *s.from as *mut libc::sockaddr_storage).cast();
        s.msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        s.msg.msg_iov = &mut *s.iov;
        s.msg.msg_iovlen = 1;
        let entry = opcode::RecvMsg::new(types::Fd(fd), &mut *s.msg)
            .flags(libc::MSG_TRUNC as u32)
            .build();
        self.push(entry.user_data(token))
    }

    /// The sender of the datagram a `recv_msg` on `slot` completed with.
    pub(crate) fn received_from(&self, slot: usize) -> socket2::SockAddr {
        let s = &self.slots[slot];
        let mut storage = socket2::SockAddrStorage::zeroed();
        // SAFETY: the kernel wrote a sockaddr of `msg_namelen` bytes into `from`, which has
        // room for any address family; it is copied whole into storage of the same type.
        unsafe {
            *storage.view_as::<libc::sockaddr_storage>() = *s.from;
            socket2::SockAddr::new(storage, s.msg.msg_namelen)
        }
    }

    /// Submits what is queued and waits for at least one completion, or until `timeout`.
    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let result = match timeout {
            None => self.ring.submit_and_wait(1),
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves the finished submissions into `out`.
    pub(crate) fn completions(&mut self, out: &mut Vec<Completion>) {
        for cqe in self.ring.completion() {
            let more = cqueue::more(cqe.flags());
            if !more {
                self.in_flight -= 1;
            }
            out.push(Completion {
                token: cqe.user_data(),
                result: cqe.result(),
                more,
            });
        }
    }

    /// Takes ownership of an fd that an accept completed with.
    pub(crate) fn accepted_fd(result: i32) -> OwnedFd {
        debug_assert!(result >= 0);
        // SAFETY: a successful accept's result is a new fd that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(result) }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // The kernel may still write into these until it has torn the ring down: leave
            // them allocated rather than risk it.
            std::mem::forget(std::mem::take(&mut self.slots));
        }
    }
}
