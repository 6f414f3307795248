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
    /// Opens a capture of `interface` (as `ip link` names it) that the kernel feeds only the
    /// TCP and UDP frames to or from `port` (and ARP's, with `arp`), whose reads give up after
    /// `timeout` with nothing. `PermissionDenied` without `CAP_NET_RAW`; `NotFound` for an
    /// interface this machine (or network namespace) does not have.
    pub(crate) fn open(
        interface: &str,
        port: u16,
        arp: bool,
        timeout: Duration,
    ) -> io::Result<PacketSocket> {
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
        attach_filter(&fd, &port_filter(port, arp))?;
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

/// `SO_ATTACH_FILTER`, which the libc crate does not name for glibc.
const SO_ATTACH_FILTER: libc::c_int = 26;

/// Hands the kernel a classic BPF program that says which frames this socket gets.
fn attach_filter(fd: &OwnedFd, program: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the program and its header are live for the call; the kernel copies them.
    let set = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if set < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The classic BPF program for an Ethernet frame that carries TCP or UDP to or from `port`,
/// over IPv4 (any header length, first fragments) or IPv6 (no extension headers); and ARP, with
/// `arp`. As `tcpdump -dd 'port P or arp'` would compile it.
fn port_filter(port: u16, arp: bool) -> Vec<libc::sock_filter> {
    use libc::{
        BPF_ABS, BPF_B, BPF_H, BPF_IND, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_LDX,
        BPF_MSH, BPF_RET,
    };
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let load_h = |offset| op(BPF_LD | BPF_H | BPF_ABS, 0, 0, offset);
    let load_b = |offset| op(BPF_LD | BPF_B | BPF_ABS, 0, 0, offset);
    let is = |value, jt, jf| op(BPF_JMP | BPF_JEQ | BPF_K, jt, jf, value);
    let (p, arp_type) = (port as u32, if arp { 0x0806 } else { 0xffff_ffff });
    // Jump offsets count the instructions skipped: accept is at 21, drop at 22.
    vec![
        /* 0 */ load_h(12), // EtherType
        /* 1 */ is(arp_type, 19, 0), // ARP: accept
        /* 2 */ is(0x0800, 0, 10), // IPv4, else to 13
        /* 3 */ load_b(23), // IPv4's protocol
        /* 4 */ is(6, 1, 0), // TCP
        /* 5 */ is(17, 0, 16), // UDP, else drop
        /* 6 */ load_h(20), // flags and fragment offset
        /* 7 */ op(BPF_JMP | BPF_JSET | BPF_K, 14, 0, 0x1fff), // a later fragment: drop
        /* 8 */ op(BPF_LDX | BPF_B | BPF_MSH, 0, 0, 14), // X = IPv4 header's length
        /* 9 */ op(BPF_LD | BPF_H | BPF_IND, 0, 0, 14), // source port
        /* 10 */ is(p, 10, 0),
        /* 11 */ op(BPF_LD | BPF_H | BPF_IND, 0, 0, 16), // destination port
        /* 12 */ is(p, 8, 9),
        /* 13 */ is(0x86dd, 0, 8), // IPv6, else drop
        /* 14 */ load_b(20), // IPv6's next header
        /* 15 */ is(6, 1, 0), // TCP
        /* 16 */ is(17, 0, 5), // UDP, else drop
        /* 17 */ load_h(54), // source port
        /* 18 */ is(p, 2, 0),
        /* 19 */ load_h(56), // destination port
        /* 20 */ is(p, 0, 1),
        /* 21 */ op(BPF_RET | BPF_K, 0, 0, 0x0004_0000), // accept: the whole frame
        /* 22 */ op(BPF_RET | BPF_K, 0, 0, 0), // drop
    ]
}

fn no_such(interface: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no network interface named {interface:?} here (`ip link` lists them)"),
    )
}
