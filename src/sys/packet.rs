//! Packet capture: an `AF_PACKET` socket on one interface sees every frame the interface sends
//! and receives, headers and all, as tcpdump does. It needs `CAP_NET_RAW`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `PACKET_OUTGOING`: a frame this machine sent.
const PACKET_OUTGOING: u8 = 4;
/// `ARPHRD_LOOPBACK`: the loopback interface's hardware type.
const ARPHRD_LOOPBACK: u16 = 772;

/// A raw socket capturing every frame of one interface.
pub(crate) struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a capture of `interface` (as `ip link` names it) whose reads give up after
    /// `timeout` with nothing. `PermissionDenied` without `CAP_NET_RAW`; `NotFound` for an
    /// interface this machine (or network namespace) does not have.
    pub(crate) fn open(interface: &str, timeout: Duration) -> io::Result<PacketSocket> {
        let name = CString::new(interface).map_err(|_| no_such(interface))?;
        // SAFETY: the name is a live NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(no_such(interface));
        }
        let all = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
        // SAFETY: socket takes no pointers; the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, all) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor, owned from here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; zeroed, then the fields bind needs are set.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = all as u16;
        addr.sll_ifindex = index as i32;
        // SAFETY: the address is live and its length is given.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: the timeval is live and its length is given.
        let set = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if set < 0 {
            return Err(io::Error::last_os_error());
        }
        // The kernel stamps each frame as it takes it, from now on (not only after the first,
        // as asking for the stamp of the last would).
        let on: libc::c_int = 1;
        // SAFETY: the int is live and its length is given.
        let set = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// The next frame into `buf`: its length (the frame's own, which may be more than `buf`
    /// held) and when the kernel took it (if it stamped it: it starts stamping a moment after
    /// the socket asks), or `None` when the timeout passed first. On loopback each frame is
    /// seen twice, as sent and as received: only the received copy is kept.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<Option<(usize, Option<SystemTime>)>> {
        loop {
            // SAFETY: sockaddr_ll, msghdr and the control buffer are plain data the kernel
            // fills; each pointer in msghdr points at a live buffer of the length given.
            let (n, from, at) = unsafe {
                let mut from: libc::sockaddr_ll = std::mem::zeroed();
                let mut iov = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                };
                let mut control = [0u64; 8];
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
                msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = std::mem::size_of_val(&control) as _;
                // MSG_TRUNC: the result is the frame's whole length.
                let n = libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC);
                (n, from, stamp(&msg))
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if from.sll_hatype == ARPHRD_LOOPBACK && from.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            return Ok(Some((n as usize, at)));
        }
    }
}

/// The kernel's stamp of a frame (`SCM_TIMESTAMPNS`) among a received message's controls.
///
/// # Safety
/// `msg` is a message `recvmsg` filled, its control buffer still live.
unsafe fn stamp(msg: &libc::msghdr) -> Option<SystemTime> {
    // SAFETY: the caller's promise; CMSG_* walk the control buffer the kernel wrote.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                return Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

fn no_such(interface: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no network interface named {interface:?} here (`ip link` lists them)"),
    )
}
