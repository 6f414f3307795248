//! What socket2 does not offer: binding without a port, a datagram's whole length, a Unix
//! peer's user.

use std::io;
use std::os::fd::RawFd;

/// `IP_BIND_ADDRESS_NO_PORT`: a socket bound to an address before `connect` gets its port at
/// connect, chosen for the whole address pair. Best effort (an old kernel ignores it).
pub(crate) fn bind_address_no_port(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads a live c_int of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Receives one datagram with `MSG_TRUNC`, so the length returned is the datagram's whole
/// length even when it was cut to fit `buf`.
pub(crate) fn recv_datagram(
    socket: &socket2::Socket,
    buf: &mut [u8],
) -> io::Result<(usize, socket2::SockAddr)> {
    // SAFETY: an initialised `[u8]` is a valid `[MaybeUninit<u8>]` of the same length, and
    // recvfrom only ever writes initialised bytes into it.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    socket.recv_from_with_flags(uninit, libc::MSG_TRUNC)
}

/// The user id of a Unix socket's peer (`SO_PEERCRED`).
pub(crate) fn peer_uid(fd: RawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the live `cred` and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}
