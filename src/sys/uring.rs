//! io_uring behind a small safe surface. The ring owns every buffer a submission points into,
//! and keeps it until the submission completed (or the process is done with the ring), so the
//! kernel never reads or writes memory that was freed or moved: a send takes its buffer (a
//! session's replies, handed over whole by [`Session::take_pending`], not copied) and gives it
//! back as a spare once every byte went (or, for a zero-copy send, once the kernel let go of
//! its pages).
//!
//! [`Session::take_pending`]: crate::session::Session::take_pending

use crate::model::{ReadBuffer, UringFeature, UringFeatures};
use io_uring::types::BufRingEntry;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Send buffers kept for reuse once their sends complete, and the memory they may hold: a
/// session writes its next replies into one ([`Session::offer_output`]) rather than into
/// memory allocated and freed per message. More are freed; all once the ring is idle
/// ([`release_memory`](Uring::release_memory)).
///
/// [`Session::offer_output`]: crate::session::Session::offer_output
const SPARE_SENDS: usize = 1024;
const SPARE_BYTES: usize = 16 * 1024 * 1024;

/// One finished submission.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    /// The token it was submitted with.
    pub(crate) token: u64,
    /// The syscall's result: a count or an fd, or a negated errno.
    pub(crate) result: i32,
    /// A multishot submission that will complete again.
    pub(crate) more: bool,
    /// The provided buffer a multishot receive filled: read it with
    /// [`Uring::buffer`], then hand it back with [`Uring::give_back`].
    pub(crate) buffer: Option<u16>,
    /// The kernel goes on filling that buffer (incremental buffers): it is not handed back
    /// yet.
    pub(crate) buffer_more: bool,
    /// A zero-copy send's notification that the kernel let go of its buffer.
    notification: bool,
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
    recv: ReadBuffer,
    /// The bytes of the send in flight, the ring's until every one went.
    send: Vec<u8>,
    /// How many of them went.
    send_from: usize,
    /// Which of the ring's send buffers `send` is (a count from 1; 0 while it holds none), so
    /// that a zero-copy send's notification finds its buffer after the slot is done with it.
    send_gen: u64,
    /// `send` may go zero-copy (`send-zc`, over TCP).
    zero_copy: bool,
    /// Zero-copy sends from `send` whose notifications have not come: the kernel may still
    /// read it.
    pinned: u32,
    /// The slot's socket is in the ring's registered files, at the slot's index
    /// (`fixed-files`).
    registered: bool,
    /// For a datagram receive: the sender's address and the message header pointing at it.
    from: Box<libc::sockaddr_storage>,
    iov: Box<libc::iovec>,
    msg: Box<libc::msghdr>,
}

impl Slot {
    fn new(recv_size: usize) -> Self {
        Slot {
            recv: ReadBuffer::new(recv_size),
            send: Vec::new(),
            send_from: 0,
            send_gen: 0,
            zero_copy: false,
            pinned: 0,
            registered: false,
            // SAFETY: all-zero bytes are a valid sockaddr_storage, iovec and msghdr.
            from: Box::new(unsafe { std::mem::zeroed() }),
            iov: Box::new(unsafe { std::mem::zeroed() }),
            msg: Box::new(unsafe { std::mem::zeroed() }),
        }
    }
}

/// A ring of provided buffers (`IORING_REGISTER_PBUF_RING`): a multishot receive takes one
/// per completion, and the completion says which; handing it back makes it available again.
/// Both the ring of entries and the buffers live as long as the `Uring`.
struct BufRing {
    /// `count` entries, page-aligned as the kernel requires.
    entries: std::ptr::NonNull<BufRingEntry>,
    /// The buffers, one after another from a page boundary ([`ReadBuffer`]: the allocator's
    /// 16-byte alignment cost `uring` about a third of its throughput at 10 x 1 MiB).
    data: ReadBuffer,
    count: u16,
    size: usize,
    /// Our copy of the tail the kernel reads: where the next handed-back buffer goes.
    tail: u16,
    /// Incremental (IOU_PBUF_RING_INC): how far the kernel has filled each buffer, since it
    /// fills a buffer a piece at a time and each completion is the next piece.
    filled: Option<Vec<u32>>,
    /// Where in the ring each buffer's entry was put, by buffer id.
    at: Vec<u16>,
    /// The buffer the kernel goes on filling (incremental), if its last piece was handed back.
    partial: Option<u16>,
}

impl BufRing {
    fn ring_bytes(count: u16) -> usize {
        count as usize * std::mem::size_of::<BufRingEntry>()
    }

    /// Where buffer `bid` begins in `data`.
    fn offset(&self, bid: u16) -> usize {
        bid as usize * self.size
    }

    /// Writes buffer `bid` into the ring at the tail; published by [`publish`](BufRing::publish).
    fn put(&mut self, bid: u16) {
        let index = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `index` < count, and the entries mapping holds `count` entries; the kernel
        // reads entries only below the published tail, and this one is past it.
        let entry = unsafe { &mut *self.entries.as_ptr().add(index) };
        entry.set_addr(self.data[self.offset(bid)..].as_ptr() as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.at[bid as usize] = index as u16;
        self.tail = self.tail.wrapping_add(1);
    }

    /// Moves where the kernel fills the [`partial`](BufRing::partial) buffer next up to a
    /// cache line. The kernel fills an incremental buffer where its last piece ended, so after
    /// one piece of an odd size every later receive into the buffer would land unaligned, and
    /// the kernel's copy into an address that is not cache-line aligned runs at about a
    /// quarter of its speed here (`rep movsb` on AMD EPYC: at 100 x 64 KiB the copy took 43%
    /// of `uring`'s CPU, 17% into aligned buffers). The entry is the kernel's too (it moves
    /// the address on as it fills), so this is only for a ring whose receives run inside this
    /// thread's own `io_uring_enter` (DEFER_TASKRUN), never while this runs.
    fn align_partial(&mut self) {
        let (Some(bid), Some(filled)) = (self.partial.take(), self.filled.as_ref()) else {
            return;
        };
        let f = filled[bid as usize] as usize;
        let pad = f.next_multiple_of(CACHE_LINE) - f;
        if pad == 0 || self.size - f < pad + CACHE_LINE {
            return; // aligned, or too near its end to matter
        }
        let expected = self.data[self.offset(bid) + f..].as_ptr() as u64;
        // SAFETY: `at` names the entry this buffer was put in, inside our live mapping; the
        // kernel reads and writes it only inside io_uring_enter (the caller's promise).
        let entry = unsafe { &mut *self.entries.as_ptr().add(self.at[bid as usize] as usize) };
        if entry.bid() != bid || entry.addr() != expected || entry.len() as usize != self.size - f {
            return; // not where we left it: left alone
        }
        entry.set_addr(expected + pad as u64);
        entry.set_len(entry.len() - pad as u32);
        if let Some(filled) = self.filled.as_mut() {
            filled[bid as usize] += pad as u32;
        }
    }

    /// Makes every entry put so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of our live mapping; the kernel reads
        // it concurrently, so it is written atomically with release ordering, after the entries.
        unsafe {
            let tail =
                BufRingEntry::tail(self.entries.as_ptr()) as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Where an accept writes its peer's address.
struct PeerAddr {
    addr: libc::sockaddr_storage,
    len: libc::socklen_t,
}

/// A cache line: each receive into an incremental buffer begins on one
/// ([`BufRing::align_partial`]).
const CACHE_LINE: usize = 64;
/// The group id of our one ring of provided buffers.
const BUF_GROUP: u16 = 0;
/// `IOU_PBUF_RING_INC`: the kernel consumes provided buffers incrementally (Linux 6.12).
const PBUF_RING_INC: u16 = 2;
/// Incremental provided buffers: 16 of 256 KiB (4 MiB, touched as used). Receives fill one a
/// piece at a time, so a round's small messages share a buffer and a large one lands whole,
/// handed to the session in one piece (at 100 x 64 KiB, 256 KiB buffers took 0.7-0.8x the CPU
/// per message of 16 KiB ones, measured pinned with echo-bench's compare.py). The kernel takes
/// them in turn, so all of them pass through the cache: 16 took 0.88x-1.03x the CPU per
/// message of 64 at 64 KiB and 1 MiB (two lab runs of 5 rounds), with no receive left without
/// a buffer up to 1,000 x 64 KiB; 8 ran out on 11-14% of receives at 100 x 64 KiB and 1 MiB.
const INCREMENTAL_BUFFERS: (u16, usize) = (16, 256 * 1024);
/// Whole provided buffers, one per receive: enough for every completion of a busy round,
/// 2048 of 16 KiB (32 MiB).
const WHOLE_BUFFERS: (u16, usize) = (2048, 16 * 1024);

/// Sends of at least this many bytes go zero-copy under `send-zc`: for less, pinning pages and
/// a second completion cost more than the copy they save (the kernel's documentation of
/// MSG_ZEROCOPY puts the break-even near 10 KB; loopback, where the kernel copies anyway, has
/// none to measure).
const ZERO_COPY_MIN: usize = 16 * 1024;
/// A zero-copy send's user data: this bit and a count. A model's tokens never have it alone
/// among the top two (a slot's are small; its constants, near `u64::MAX`, have the top bit).
const ZERO_COPY: u64 = 1 << 62;

fn is_zero_copy(user_data: u64) -> bool {
    user_data >> 62 == 1
}

/// The zero-copy sends (IORING_OP_SEND_ZC) whose buffers the kernel may still read: each
/// completes twice, first with the bytes it sent, then with a notification once the kernel let
/// go of the pages, and only then may the buffer be written again.
#[derive(Default)]
struct Pinned {
    /// Each zero-copy send not yet notified, by its user data: the token it stands for, its
    /// slot, and which of the slot's buffers it sends from.
    sends: HashMap<u64, (u64, usize, u64)>,
    /// The next send's count.
    next: u64,
    /// Buffers their slots are done with while notifications are still to come, by their
    /// generation, with how many are.
    retired: HashMap<u64, (Vec<u8>, u32)>,
}

impl Pinned {
    /// Zero-copy send `id` was notified (or failed with none to come): its buffer, if no
    /// other send from it awaits one and its slot is done with it.
    fn notified(&mut self, id: u64, slots: &mut [Slot]) -> Option<Vec<u8>> {
        let (_, slot, generation) = self.sends.remove(&id)?;
        if let Some(s) = slots.get_mut(slot).filter(|s| s.send_gen == generation) {
            s.pinned = s.pinned.saturating_sub(1);
            return None;
        }
        let left = &mut self.retired.get_mut(&generation)?.1;
        *left = left.saturating_sub(1);
        if *left > 0 {
            return None;
        }
        self.retired.remove(&generation).map(|(buf, _)| buf)
    }
}

/// The most sockets the ring's registered file table holds (`fixed-files`); past it (or the
/// process's open-file limit, which the kernel holds the table to), a socket is named by its fd.
const FIXED_FILES: u32 = 1 << 16;

/// Builds a submission naming a slot's socket by its index in the registered files when it is
/// there (`Some(index)`), else by its fd: the two are different types to the builders.
macro_rules! on_socket {
    ($fixed:expr, $fd:expr, |$target:ident| $build:expr) => {
        match $fixed {
            Some(index) => {
                let $target = types::Fixed(index);
                $build
            }
            None => {
                let $target = types::Fd($fd);
                $build
            }
        }
    };
}

/// An io_uring and the buffers its submissions use.
pub(crate) struct Uring {
    ring: IoUring,
    slots: Vec<Slot>,
    /// Send buffers not in flight, lent to the next sends: memory for replies is held while
    /// they travel, not by every connection.
    spare: Vec<Vec<u8>>,
    /// The capacity of the spares, together.
    spare_bytes: usize,
    provided: Option<BufRing>,
    /// Where each accept in flight writes its peer's address, by accept slot: boxed, so the
    /// kernel's pointer stays valid as the list grows.
    #[allow(clippy::vec_box)] // a Vec of the values would move them as it grows
    accepted_from: Vec<Box<PeerAddr>>,
    in_flight: usize,
    /// The kernel ends a multishot receive after a number of bytes (`optlen`, Linux 6.17);
    /// where it does not, [`recv_multi`](Uring::recv_multi) receives one buffer at a time.
    recv_limit: bool,
    /// The ring's index among the registered ring fds, when it is registered.
    registered_ring: Option<u32>,
    /// Zero-copy sends awaiting their notifications, with `send-zc` on.
    pinned: Option<Pinned>,
    /// The size of the registered file table, 0 without one (`fixed-files`).
    fixed_files: u32,
    /// The count of send buffers handed to the ring ([`Slot::send_gen`]).
    sends: u64,
    features: UringFeatures,
}

/// How long an idle SQPOLL thread spins before it sleeps until woken.
const SQPOLL_IDLE_MS: u32 = 50;

/// `features` without `feature`, said once in the log with why.
fn without(features: UringFeatures, feature: UringFeature, why: &str) -> UringFeatures {
    tracing::warn!(feature = %feature, "io_uring: going without {feature}: {why}");
    features.with(feature, false)
}

/// The error for a kernel that refuses io_uring.
fn unavailable(e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("io_uring is not available here ({e}); choose another --model, such as epoll"),
    )
}

impl Uring {
    /// A ring with room for `entries` submissions at once, using the `wanted` features the
    /// kernel has: one it refuses is logged once and gone without ([`features`](Uring::features)
    /// says which are in use). A kernel that refuses io_uring itself (too old, or disabled by
    /// `kernel.io_uring_disabled` or a seccomp filter) is an error that says so.
    pub(crate) fn new(entries: u32, wanted: UringFeatures) -> io::Result<Self> {
        use UringFeature::*;
        let mut features = wanted;
        // Each needs what comes before it gone or on: DEFER_TASKRUN needs SINGLE_ISSUER, and
        // the kernel refuses it beside SQPOLL.
        if features.is_on(DeferTaskrun) && !features.is_on(SingleIssuer) {
            features = without(features, DeferTaskrun, "it needs single-issuer");
        }
        if features.is_on(DeferTaskrun) && features.is_on(Sqpoll) {
            features = without(
                features,
                DeferTaskrun,
                "the kernel refuses it beside sqpoll",
            );
        }
        let ring = loop {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(entries * 4);
            if features.is_on(SingleIssuer) {
                builder.setup_single_issuer();
            }
            if features.is_on(DeferTaskrun) {
                builder.setup_defer_taskrun();
            }
            if features.is_on(Sqpoll) {
                builder.setup_sqpoll(SQPOLL_IDLE_MS);
            }
            match builder.build(entries) {
                Ok(ring) => break ring,
                // A setup flag this kernel does not know: the newest goes first.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    let Some(&newest) = [Sqpoll, DeferTaskrun, SingleIssuer]
                        .iter()
                        .find(|&&f| features.is_on(f))
                    else {
                        return Err(unavailable(e));
                    };
                    features = without(features, newest, &format!("this kernel refuses it ({e})"));
                }
                Err(e) => return Err(unavailable(e)),
            }
        };
        let mut uring = Uring {
            ring,
            slots: Vec::new(),
            spare: Vec::new(),
            spare_bytes: 0,
            provided: None,
            accepted_from: Vec::new(),
            in_flight: 0,
            recv_limit: false,
            registered_ring: None,
            pinned: None,
            sends: 0,
            fixed_files: 0,
            features,
        };
        if features.is_on(FixedFiles) {
            let size = FIXED_FILES.min(crate::sys::fd_limit().try_into().unwrap_or(u32::MAX));
            match uring.ring.submitter().register_files_sparse(size) {
                Ok(()) => uring.fixed_files = size,
                Err(e) => {
                    let why = format!("this kernel refuses it ({e})");
                    uring.features = without(uring.features, FixedFiles, &why);
                }
            }
        }
        if features.is_on(SendZc) {
            let mut probe = io_uring::Probe::new();
            let probed = uring.ring.submitter().register_probe(&mut probe);
            if probed.is_ok() && probe.is_supported(opcode::SendZc::CODE) {
                uring.pinned = Some(Pinned::default());
            } else {
                let why = "this kernel has no IORING_OP_SEND_ZC";
                uring.features = without(uring.features, SendZc, why);
            }
        }
        if features.is_on(RegisteredRing) {
            match uring.register_ring_fd() {
                Ok(index) => uring.registered_ring = Some(index),
                Err(e) => {
                    uring.features = without(
                        uring.features,
                        RegisteredRing,
                        &format!("this kernel refuses it ({e})"),
                    )
                }
            }
        }
        Ok(uring)
    }

    /// The features in use: those wanted that the kernel has.
    pub(crate) fn features(&self) -> UringFeatures {
        self.features
    }

    /// Registers the ring's own fd (IORING_REGISTER_RING_FDS), so that `io_uring_enter` takes
    /// its index instead and skips the fd's lookup; returns the index.
    fn register_ring_fd(&mut self) -> io::Result<u32> {
        const IORING_REGISTER_RING_FDS: libc::c_uint = 20;
        #[repr(C)]
        struct RsrcUpdate {
            offset: u32,
            resv: u32,
            data: u64,
        }
        let mut update = RsrcUpdate {
            offset: u32::MAX, // any free index: the kernel writes the one it took
            resv: 0,
            data: self.ring.as_raw_fd() as u64,
        };
        // SAFETY: the kernel reads and writes one `io_uring_rsrc_update`, which `update` is.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.ring.as_raw_fd(),
                IORING_REGISTER_RING_FDS,
                &mut update as *mut RsrcUpdate,
                1,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(update.offset)
    }

    /// Registers the provided buffers [`recv_multi`](Uring::recv_multi) receives into:
    /// incremental ones where the kernel has them and the feature is on, else whole ones.
    pub(crate) fn provide_buffers(&mut self) -> io::Result<()> {
        assert!(self.provided.is_none());
        let mut bufs = None;
        if self.features.is_on(UringFeature::IncrementalBuffers) {
            let (count, size) = INCREMENTAL_BUFFERS;
            match self.register_buffers(count, size, PBUF_RING_INC) {
                Ok(mut b) => {
                    b.filled = Some(vec![0; count as usize]);
                    bufs = Some(b);
                }
                Err(e) => {
                    let why = format!("this kernel refuses it ({e})");
                    self.features = without(self.features, UringFeature::IncrementalBuffers, &why);
                }
            }
        }
        let bufs = match bufs {
            Some(b) => b,
            None => self.register_buffers(WHOLE_BUFFERS.0, WHOLE_BUFFERS.1, 0)?,
        };
        self.provided = Some(bufs);
        if self.features.is_on(UringFeature::MultishotRecv) {
            self.recv_limit = self.kernel_limits_receives()?;
            if !self.recv_limit {
                let why = "this kernel cannot end one after a byte count (Linux 6.17 can)";
                self.features = without(self.features, UringFeature::MultishotRecv, why);
            }
        }
        Ok(())
    }

    /// A ring of `count` (a power of two) buffers of `size` bytes, registered with `flags`.
    fn register_buffers(&mut self, count: u16, size: usize, flags: u16) -> io::Result<BufRing> {
        assert!(count.is_power_of_two());
        // SAFETY: an anonymous private mapping takes no fd or address of ours.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BufRing::ring_bytes(count),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let entries = std::ptr::NonNull::new(p.cast::<BufRingEntry>())
            .ok_or_else(io::Error::last_os_error)?;
        let mut bufs = BufRing {
            entries,
            data: ReadBuffer::new(count as usize * size),
            count,
            size,
            tail: 0,
            filled: None,
            at: vec![0; count as usize],
            partial: None,
        };
        for bid in 0..count {
            bufs.put(bid);
        }
        bufs.publish();
        // SAFETY: the ring's memory is page-aligned (mmap), holds `count` initialised entries,
        // and stays mapped, with the buffers they point to, for the life of the Uring (Drop).
        let registered = unsafe {
            self.ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                count,
                BUF_GROUP,
                flags,
            )
        };
        if let Err(e) = registered {
            // SAFETY: unmaps the mapping made above, which the kernel never took.
            unsafe { libc::munmap(p, BufRing::ring_bytes(count)) };
            return Err(e);
        }
        Ok(bufs)
    }

    /// Asks the kernel whether it ends a multishot receive after `optlen` bytes: one limited
    /// receive on a socket pair of our own, which an older kernel refuses (EINVAL).
    fn kernel_limits_receives(&mut self) -> io::Result<bool> {
        const PROBE: u64 = u64::MAX - 100;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let entry = with_total_limit(
            opcode::RecvMulti::new(types::Fd(ours.as_raw_fd()), BUF_GROUP).build(),
            1,
        );
        self.push(entry.user_data(PROBE))?;
        (&theirs).write_all(b"?")?;
        let mut done = Vec::new();
        // Bounded: the byte is there, so the receive completes at once, one way or the other.
        for _ in 0..100 {
            self.submit_and_wait(Some(Duration::from_millis(10)))?;
            self.completions(&mut done);
            if let Some(c) = done.iter().find(|c| c.token == PROBE && !c.more) {
                if let Some(bid) = c.buffer {
                    self.give_back(bid, c.io().unwrap_or(0), c.buffer_more);
                }
                return Ok(c.result >= 0);
            }
        }
        Ok(false)
    }

    /// Receives on `fd`, each completion (with `token`) carrying one provided buffer, until
    /// `limit` bytes came (then the last completion says no more will), end of stream, or a
    /// cancel: a connection that stops wanting input is not handed much more than it asked
    /// for while its cancel is on the way. A kernel that cannot limit a multishot receive
    /// (or `--uring multishot-recv=off`) gets a single receive instead: up to `limit` bytes in
    /// one buffer, then the caller asks again.
    pub(crate) fn recv_multi(
        &mut self,
        slot: usize,
        fd: RawFd,
        token: u64,
        limit: usize,
    ) -> io::Result<()> {
        let limit = u32::try_from(limit).unwrap_or(u32::MAX).max(1);
        let entry = if self.recv_limit {
            let multi = on_socket!(self.fixed(slot), fd, |socket| {
                opcode::RecvMulti::new(socket, BUF_GROUP).build()
            });
            with_total_limit(multi, limit)
        } else {
            // The length bounds what the kernel takes from the buffer it picks.
            on_socket!(self.fixed(slot), fd, |socket| {
                opcode::Recv::new(socket, std::ptr::null_mut(), limit)
                    .buf_group(BUF_GROUP)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT)
            })
        };
        self.push(entry.user_data(token))
    }

    /// Puts `fd`, the socket of connection slot `slot`, in the ring's registered files, so
    /// that the slot's receives and sends name it there (`fixed-files`); a slot past the table
    /// goes on by its fd. The table holds the socket open until [`unregister`](Uring::unregister).
    pub(crate) fn register(&mut self, slot: usize, fd: RawFd) {
        let Some(index) = u32::try_from(slot).ok().filter(|&i| i < self.fixed_files) else {
            return;
        };
        let put = self.ring.submitter().register_files_update(index, &[fd]);
        self.slot(slot, 0).registered = put.is_ok();
        if let Err(e) = put {
            tracing::debug!(error = %e, slot, "a socket not registered: named by its fd");
        }
    }

    /// Takes slot `slot`'s socket out of the registered files, so that closing it closes it.
    pub(crate) fn unregister(&mut self, slot: usize) {
        let Some(s) = self.slots.get_mut(slot).filter(|s| s.registered) else {
            return;
        };
        s.registered = false;
        // Index `slot` is below the table's size: it was registered there.
        let _ = self
            .ring
            .submitter()
            .register_files_update(slot as u32, &[-1]);
    }

    /// Slot `slot`'s index in the registered files, if its socket is there.
    fn fixed(&self, slot: usize) -> Option<u32> {
        self.slots
            .get(slot)
            .filter(|s| s.registered)
            .map(|_| slot as u32)
    }

    /// The `n` bytes a receive completed with in provided buffer `bid`.
    pub(crate) fn buffer(&self, bid: u16, n: usize) -> &[u8] {
        let Some(bufs) = self.provided.as_ref().filter(|b| bid < b.count) else {
            return &[]; // not a buffer of ours: nothing to read
        };
        let filled = bufs.filled.as_ref().map_or(0, |f| f[bid as usize] as usize);
        let start = bufs.offset(bid) + filled.min(bufs.size);
        let end = (start + n).min(bufs.offset(bid) + bufs.size);
        &bufs.data[start..end]
    }

    /// The `n` bytes received in provided buffer `bid` were read: the buffer goes back to the
    /// kernel for later receives, unless (`more`) it goes on filling it after them.
    pub(crate) fn give_back(&mut self, bid: u16, n: usize, more: bool) {
        let Some(bufs) = self.provided.as_mut().filter(|b| bid < b.count) else {
            return;
        };
        if let Some(filled) = bufs.filled.as_mut() {
            let f = &mut filled[bid as usize];
            *f = if more { *f + n as u32 } else { 0 };
            if more {
                bufs.partial = Some(bid);
            } else if bufs.partial == Some(bid) {
                bufs.partial = None;
            }
        }
        if !more {
            bufs.put(bid);
            bufs.publish();
        }
    }

    /// Gives back to the system the memory a burst of traffic used, for a ring with no
    /// connection left to need it: the provided buffers' pages (the kernel fills them again
    /// from fresh pages when receives come), the spare send buffers, and what the allocator
    /// holds freed (glibc's `malloc_trim`). Only while no receive is in flight.
    pub(crate) fn release_memory(&mut self) {
        self.spare = Vec::new();
        self.spare_bytes = 0;
        if let Some(bufs) = &self.provided {
            let start = bufs.data[bufs.offset(0)..].as_ptr() as usize;
            let end = start + bufs.count as usize * bufs.size;
            if end > start {
                // SAFETY: whole pages inside our own buffer, which no submission in flight
                // writes (the caller's promise); they read back as zeros, and nothing reads
                // them before the kernel fills them again.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
                };
            }
        }
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only returns free memory of the allocator's to the system.
        unsafe {
            libc::malloc_trim(0);
        }
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

    /// Accepts one connection on `fd`, completing with `token`; its peer's address goes to
    /// accept slot `slot` ([`accepted_from`](Uring::accepted_from)). Several may be in flight
    /// on one listener, each with a slot of its own; each takes one connection.
    pub(crate) fn accept(&mut self, fd: RawFd, slot: usize, token: u64) -> io::Result<()> {
        while self.accepted_from.len() <= slot {
            // SAFETY: all-zero bytes are a valid sockaddr_storage.
            self.accepted_from.push(Box::new(PeerAddr {
                addr: unsafe { std::mem::zeroed() },
                len: 0,
            }));
        }
        let peer = &mut self.accepted_from[slot];
        peer.len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let (addr, len) = (
            (&mut peer.addr as *mut libc::sockaddr_storage).cast(),
            &mut peer.len as *mut libc::socklen_t,
        );
        let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        self.push(
            opcode::Accept::new(types::Fd(fd), addr, len)
                .flags(flags)
                .build()
                .user_data(token),
        )
    }

    /// The peer of the connection that the accept on `slot` completed with, as the kernel
    /// named it at accept (so also for a peer that has reset since).
    pub(crate) fn accepted_from(&self, slot: usize) -> Option<socket2::SockAddr> {
        let peer = self.accepted_from.get(slot)?;
        let mut storage = socket2::SockAddrStorage::zeroed();
        // SAFETY: the kernel wrote a sockaddr of `len` bytes into `addr`, which has room for
        // any family; it is copied whole into storage of the same type.
        unsafe {
            *storage.view_as::<libc::sockaddr_storage>() = peer.addr;
            Some(socket2::SockAddr::new(storage, peer.len))
        }
    }

    /// Cancels every submission in flight on `fd`; completes with `token`.
    pub(crate) fn cancel_fd(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let which = types::CancelBuilder::fd(types::Fd(fd)).all();
        self.push(opcode::AsyncCancel2::new(which).build().user_data(token))
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

    /// The `n` bytes a datagram receive on `slot` completed with.
    pub(crate) fn received(&self, slot: usize, n: usize) -> &[u8] {
        let recv = &self.slots[slot].recv;
        &recv[..n.min(recv.len())]
    }

    /// An empty buffer for the next replies: a spare one when the ring has it.
    pub(crate) fn spare(&mut self) -> Vec<u8> {
        let buf = self.spare.pop().unwrap_or_default();
        self.spare_bytes -= buf.capacity();
        buf
    }

    /// Keeps `buf`'s memory for a later [`spare`](Uring::spare), within the spares' bounds.
    pub(crate) fn keep_spare(&mut self, mut buf: Vec<u8>) {
        let fits = self.spare_bytes + buf.capacity() <= SPARE_BYTES;
        if fits && self.spare.len() < SPARE_SENDS && buf.capacity() > 0 {
            buf.clear();
            self.spare_bytes += buf.capacity();
            self.spare.push(buf);
        }
    }

    /// Sends `buf` on `fd` from slot `slot`, completing with `token`: the ring keeps the buffer
    /// until every byte went ([`sent`](Uring::sent), [`send_rest`](Uring::send_rest)) and the
    /// kernel let go of it. `zero_copy`: `fd` takes zero-copy sends (TCP does, a Unix socket
    /// does not), made of large ones when `send-zc` is on.
    pub(crate) fn send(
        &mut self,
        slot: usize,
        fd: RawFd,
        buf: Vec<u8>,
        token: u64,
        zero_copy: bool,
    ) -> io::Result<()> {
        self.sends += 1;
        let (generation, on) = (self.sends, self.pinned.is_some());
        let s = self.slot(slot, 0);
        debug_assert_eq!(s.pinned, 0, "the last buffer was retired");
        s.send = buf;
        s.send_from = 0;
        s.send_gen = generation;
        s.zero_copy = zero_copy && on;
        self.send_rest(slot, fd, token)
    }

    /// Sends what is left of slot `slot`'s buffer after a short send.
    pub(crate) fn send_rest(&mut self, slot: usize, fd: RawFd, token: u64) -> io::Result<()> {
        self.slot(slot, 0);
        let fixed = self.fixed(slot);
        let s = &mut self.slots[slot];
        let rest = &s.send[s.send_from..];
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let entry = match self.pinned.as_mut() {
            Some(p) if s.zero_copy && rest.len() >= ZERO_COPY_MIN => {
                let id = ZERO_COPY | (p.next % ZERO_COPY);
                p.next += 1;
                p.sends.insert(id, (token, slot, s.send_gen));
                s.pinned += 1;
                on_socket!(fixed, fd, |socket| {
                    opcode::SendZc::new(socket, rest.as_ptr(), len)
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(id)
                })
            }
            _ => on_socket!(fixed, fd, |socket| {
                opcode::Send::new(socket, rest.as_ptr(), len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(token)
            }),
        };
        self.push(entry)
    }

    /// The send on `slot` completed with `written` bytes (`None`: it failed, and the rest is
    /// dropped). True while bytes of its buffer are left for [`send_rest`](Uring::send_rest);
    /// otherwise the buffer goes back to the spares.
    pub(crate) fn sent(&mut self, slot: usize, written: Option<usize>) -> bool {
        let Some(s) = self.slots.get_mut(slot) else {
            return false;
        };
        match written {
            Some(n) if n > 0 && s.send_from + n < s.send.len() => {
                s.send_from += n;
                return true;
            }
            _ => {}
        }
        let buf = std::mem::take(&mut s.send);
        s.send_from = 0;
        let pinned = std::mem::take(&mut s.pinned);
        let generation = std::mem::take(&mut s.send_gen); // no longer the slot's
        match self.pinned.as_mut() {
            // The kernel may still read it: kept until the last notification.
            Some(p) if pinned > 0 => drop(p.retired.insert(generation, (buf, pinned))),
            _ => self.keep_spare(buf),
        }
        false
    }

    /// Receives one datagram from `fd` into the slot's buffer (of `size` bytes, made on the
    /// slot's first use: a datagram's largest), with its sender; read them with
    /// [`received`](Uring::received) and [`received_from`](Uring::received_from). A datagram
    /// larger than the buffer completes with its whole length (`MSG_TRUNC`).
    pub(crate) fn recv_msg(
        &mut self,
        slot: usize,
        size: usize,
        fd: RawFd,
        token: u64,
    ) -> io::Result<()> {
        let s = self.slot(slot, size);
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
        if self.features.is_on(UringFeature::DeferTaskrun) {
            if let Some(bufs) = &mut self.provided {
                bufs.align_partial(); // no receive runs until the call below
            }
        }
        let ts = timeout.map(types::Timespec::from);
        let result = match (self.registered_ring, &ts) {
            (Some(index), _) => self.enter_registered(index, timeout),
            (None, None) => self.ring.submit_and_wait(1),
            (None, Some(ts)) => {
                let args = types::SubmitArgs::new().timespec(ts);
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

    /// `io_uring_enter` by the ring's registered index (the `io-uring` crate keeps the index
    /// it registers in a submitter of the moment, so the call is made here).
    fn enter_registered(&mut self, index: u32, timeout: Option<Duration>) -> io::Result<usize> {
        const GETEVENTS: u32 = 1;
        const SQ_WAKEUP: u32 = 2;
        const EXT_ARG: u32 = 8;
        const REGISTERED_RING: u32 = 16;
        /// `struct io_uring_getevents_arg` and `struct __kernel_timespec`.
        #[repr(C)]
        struct GeteventsArg {
            sigmask: u64,
            sigmask_sz: u32,
            min_wait_usec: u32,
            ts: u64,
        }
        #[repr(C)]
        struct KernelTimespec {
            sec: i64,
            nsec: i64,
        }
        let (to_submit, wake) = {
            let mut sq = self.ring.submission();
            sq.sync();
            (sq.len() as u32, sq.need_wakeup())
        };
        let mut flags = GETEVENTS | REGISTERED_RING;
        if wake {
            flags |= SQ_WAKEUP;
        }
        let ts = timeout.map(|t| KernelTimespec {
            sec: t.as_secs() as i64,
            nsec: t.subsec_nanos() as i64,
        });
        let arg = ts.as_ref().map(|ts| GeteventsArg {
            sigmask: 0,
            sigmask_sz: 0,
            min_wait_usec: 0,
            ts: ts as *const KernelTimespec as u64,
        });
        let (arg_ptr, arg_size) = match &arg {
            Some(a) => {
                flags |= EXT_ARG;
                (
                    a as *const GeteventsArg as usize,
                    std::mem::size_of::<GeteventsArg>(),
                )
            }
            None => (0, 0),
        };
        // SAFETY: the kernel reads `arg` (and the timespec it points to), both alive across
        // the call, and the ring's shared queues, which the `IoUring` keeps mapped.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                index,
                to_submit,
                1u32,
                flags,
                arg_ptr,
                arg_size,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    /// Moves the finished submissions into `out`. A zero-copy send completes as any send
    /// would, once, with its token; its notification is the ring's own.
    pub(crate) fn completions(&mut self, out: &mut Vec<Completion>) {
        let start = out.len();
        for cqe in self.ring.completion() {
            let more = cqueue::more(cqe.flags());
            if !more {
                self.in_flight -= 1;
            }
            out.push(Completion {
                token: cqe.user_data(),
                result: cqe.result(),
                more,
                buffer: cqueue::buffer_select(cqe.flags()),
                buffer_more: cqueue::buffer_more(cqe.flags()),
                notification: cqueue::notif(cqe.flags()),
            });
        }
        if let Some(p) = self.pinned.as_mut() {
            let (slots, mut freed, mut i) = (&mut self.slots, Vec::new(), 0);
            out.retain_mut(|c| {
                i += 1;
                if i <= start || !is_zero_copy(c.token) {
                    return true;
                }
                let token = p.sends.get(&c.token).map(|&(token, _, _)| token);
                // Its notification, or a send that failed with none to come: the pages are free.
                if c.notification || !c.more {
                    freed.extend(p.notified(c.token, slots));
                }
                match token {
                    Some(token) if !c.notification => {
                        (c.token, c.more) = (token, false);
                        true
                    }
                    _ => false,
                }
            });
            for buf in freed {
                self.keep_spare(buf);
            }
        }
    }

    /// Takes ownership of an fd that an accept completed with.
    pub(crate) fn accepted_fd(result: i32) -> OwnedFd {
        debug_assert!(result >= 0);
        // SAFETY: a successful accept's result is a new fd that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(result) }
    }
}

/// A multishot receive that ends once `limit` bytes came (the `optlen` field of the
/// submission, Linux 6.17), each of its receives taking at most `limit` too (its `len`): the
/// kernel counts the total only after a receive, so without the cap one receive could fill a
/// whole provided buffer (256 KiB) past the budget. The `io-uring` crate sets neither yet.
fn with_total_limit(entry: squeue::Entry, limit: u32) -> squeue::Entry {
    /// Where `len` and `optlen` (the union of `splice_fd_in`, `file_index` and `optlen`) lie
    /// in `struct io_uring_sqe`, fixed by the kernel's ABI.
    const LEN: usize = 24;
    const OPTLEN: usize = 44;
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around the kernel's 64-byte `io_uring_sqe` (the
    // transmute checks the size), and any bytes are a valid submission to hold; the kernel
    // reads bytes 24..28 of a multishot receive as each receive's cap and 44..48 as the total.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(entry) };
    raw[LEN..LEN + 4].copy_from_slice(&limit.to_ne_bytes());
    raw[OPTLEN..OPTLEN + 4].copy_from_slice(&limit.to_ne_bytes());
    // SAFETY: as above, the same bytes with the limits written in.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

impl Drop for Uring {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // The kernel may still write into these until it has torn the ring down: leave
            // them allocated rather than risk it.
            std::mem::forget(std::mem::take(&mut self.slots));
            std::mem::forget(std::mem::take(&mut self.accepted_from));
            std::mem::forget(self.pinned.take());
            std::mem::forget(self.provided.take());
        } else if let Some(bufs) = self.provided.take() {
            let _ = self.ring.submitter().unregister_buf_ring(BUF_GROUP);
            // SAFETY: unregistered, and nothing is in flight: the mapping is ours alone.
            unsafe {
                libc::munmap(
                    bufs.entries.as_ptr().cast(),
                    BufRing::ring_bytes(bufs.count),
                )
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// One turn of the ring: what completed within 10 ms, into `done`.
    fn turn(ring: &mut Uring, done: &mut Vec<Completion>) {
        ring.submit_and_wait(Some(Duration::from_millis(10)))
            .unwrap();
        done.clear();
        ring.completions(done);
    }

    /// Reads what one message of `len` bytes on `ring`'s receive (token 1) completes with,
    /// and where each piece began.
    fn receive(ring: &mut Uring, len: usize) -> (Vec<u8>, Vec<usize>) {
        let (mut got, mut starts, mut done) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..200 {
            turn(ring, &mut done);
            for c in &done {
                assert_eq!((c.token, c.io().is_ok()), (1, true), "{c:?}");
                let (bid, n) = (c.buffer.expect("a provided buffer"), c.io().unwrap());
                let piece = ring.buffer(bid, n);
                starts.push(piece.as_ptr() as usize);
                got.extend_from_slice(piece);
                ring.give_back(bid, n, c.buffer_more);
            }
            if got.len() >= len {
                break;
            }
        }
        (got, starts)
    }

    #[test]
    fn incremental_pieces_begin_on_a_cache_line_and_keep_every_byte() {
        let mut ring = Uring::new(64, UringFeatures::default()).expect("an io_uring");
        ring.provide_buffers().unwrap();
        let aligned = ring.features().is_on(UringFeature::IncrementalBuffers)
            && ring.features().is_on(UringFeature::DeferTaskrun);
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ring.recv_multi(0, ours.as_raw_fd(), 1, 1 << 20).unwrap();
        // Odd sizes, so that each message would begin where an odd piece ended.
        for (i, len) in [100usize, 4000, 65, 8191, 3].into_iter().enumerate() {
            let message: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            theirs.write_all(&message).unwrap();
            let (got, starts) = receive(&mut ring, len);
            assert_eq!(got, message, "message {i}: every byte, in order");
            if aligned {
                assert_eq!(
                    starts[0] % CACHE_LINE,
                    0,
                    "message {i} begins on a cache line"
                );
            }
        }
    }

    /// Sends `message` from slot 0 (token 7), zero-copy if `zero_copy`, and reads it whole on
    /// `peer` while finishing the send as the model does; returns what the peer read and the
    /// completions the caller saw.
    fn send_through(
        ring: &mut Uring,
        ours: RawFd,
        peer: &mut impl std::io::Read,
        message: &[u8],
        zero_copy: bool,
    ) -> (Vec<u8>, Vec<Completion>) {
        send_through_slot(ring, 0, ours, peer, message, zero_copy)
    }

    /// The same from slot `slot`.
    fn send_through_slot(
        ring: &mut Uring,
        slot: usize,
        ours: RawFd,
        peer: &mut impl std::io::Read,
        message: &[u8],
        zero_copy: bool,
    ) -> (Vec<u8>, Vec<Completion>) {
        ring.send(slot, ours, message.to_vec(), 7, zero_copy)
            .unwrap();
        let (mut got, mut seen, mut done) = (vec![0; message.len()], Vec::new(), Vec::new());
        let mut read = 0;
        for _ in 0..200 {
            turn(ring, &mut done);
            for c in &done {
                seen.push(*c);
                if ring.sent(slot, c.io().ok()) {
                    ring.send_rest(slot, ours, 7).unwrap();
                }
            }
            while read < got.len() {
                match peer.read(&mut got[read..]) {
                    Ok(n) if n > 0 => read += n,
                    _ => break,
                }
            }
            if read == got.len() && ring.in_flight == 0 {
                break;
            }
        }
        got.truncate(read);
        (got, seen)
    }

    #[test]
    fn a_registered_socket_is_sent_on_by_its_index_and_closes_once_taken_out() {
        let mut ring = Uring::new(64, UringFeatures::default()).expect("an io_uring");
        if !ring.features().is_on(UringFeature::FixedFiles) {
            eprintln!("this kernel refuses registered files: nothing to check");
            return;
        }
        let (ours, mut peer) = UnixStream::pair().unwrap();
        peer.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        ring.register(3, ours.as_raw_fd());
        assert_eq!(ring.fixed(3), Some(3), "in the table at its slot");
        // A wrong fd beside it: only a submission that names the socket by its index succeeds.
        let (got, seen) = send_through_slot(&mut ring, 3, -1, &mut peer, b"by index", false);
        assert_eq!(got, b"by index", "{seen:?}");
        ring.unregister(3);
        assert_eq!(ring.fixed(3), None);
        drop(ours);
        let mut rest = Vec::new();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = std::io::Read::read_to_end(&mut peer, &mut rest).expect("end of stream");
        assert_eq!(n, 0, "closed once out of the table and dropped");
    }

    #[test]
    fn a_zero_copy_send_completes_once_and_its_buffer_comes_back_after_the_kernel_lets_go() {
        let wanted = UringFeatures::default().with(UringFeature::SendZc, true);
        let mut ring = Uring::new(64, wanted).expect("an io_uring");
        if !ring.features().is_on(UringFeature::SendZc) {
            eprintln!("this kernel has no IORING_OP_SEND_ZC: nothing to check");
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        for (i, len) in [100usize, ZERO_COPY_MIN, 300_000].into_iter().enumerate() {
            let message: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
            let (got, seen) = send_through(&mut ring, ours.as_raw_fd(), &mut peer, &message, true);
            assert!(
                got == message,
                "message {i} ({len} bytes): every byte, in order"
            );
            assert!(
                seen.iter()
                    .all(|c| c.token == 7 && !c.more && !c.notification),
                "the model sees its own token once a send, never a notification: {seen:?}"
            );
            assert_eq!(ring.in_flight, 0, "every notification came");
            let p = ring.pinned.as_ref().expect("send-zc on");
            assert!(
                p.sends.is_empty() && p.retired.is_empty(),
                "message {i}: nothing pinned"
            );
            assert!(
                ring.spare_bytes >= len,
                "message {i}: its buffer is a spare again"
            );
            if len >= ZERO_COPY_MIN {
                assert!(p.next > 0, "message {i} went zero-copy");
            } else {
                assert_eq!(p.next, 0, "a small one is copied");
            }
        }
        // A socket that takes no zero-copy sends (the caller says so): copied, as ever.
        let (unix_ours, mut unix_peer) = UnixStream::pair().unwrap();
        unix_peer
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let before = ring.pinned.as_ref().unwrap().next;
        let message = vec![b'x'; 100_000];
        let (got, _) = send_through(
            &mut ring,
            unix_ours.as_raw_fd(),
            &mut unix_peer,
            &message,
            false,
        );
        assert!(got == message);
        assert_eq!(ring.pinned.as_ref().unwrap().next, before, "not zero-copy");
    }
}
