//! A portable readiness value, as mio's `Interest` and polling's `Event` are: what a reactor
//! asks to hear about a socket, and what the kernel said of it, whichever call (`poll`,
//! `epoll`) asked. The models name these, never the kernel's event bits.

/// What a reactor wants to hear about an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Interest {
    /// Bytes (or a connection, or the peer's close) to read.
    pub(crate) read: bool,
    /// Room to write.
    pub(crate) write: bool,
}

impl Interest {
    /// Readable only.
    pub(crate) const READ: Interest = Interest {
        read: true,
        write: false,
    };
    /// Readable or writable.
    pub(crate) const BOTH: Interest = Interest {
        read: true,
        write: true,
    };
}

/// What the kernel said of an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Readiness {
    /// Something to read (or the end of the stream).
    pub(crate) readable: bool,
    /// Room to write.
    pub(crate) writable: bool,
    /// The peer closed or reset, or the socket has an error: reading tells which.
    pub(crate) hung_up: bool,
}

impl Readiness {
    /// True when the kernel said anything at all.
    pub(crate) fn any(&self) -> bool {
        self.readable || self.writable || self.hung_up
    }
}
