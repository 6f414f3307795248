//! The platform calls that std does not offer, in one thin module, one file per concern:
//! `unsafe` lives here only (and in `uring.rs`, for io_uring), each block with its `SAFETY`
//! line. The rest of switchboard calls these through the names listed below.

mod affinity;
mod epoll;
mod fds;
mod packet;
mod perf;
mod poll;
mod process;
mod readiness;
mod select;
mod shared_mem;
mod sigio;
mod signals;
mod socket;
mod stderr;
pub(crate) mod uring;

pub(crate) use affinity::{allowed_cpus, pin_command, pin_current_thread};
pub(crate) use epoll::{Epoll, Events, Trigger};
pub(crate) use fds::{dup_above, fd_limit, own_fd_table, pipe, raise_fd_limit, take_inherited_fd};
pub(crate) use packet::PacketSocket;
pub(crate) use perf::{Counted, Counter};
pub(crate) use poll::{poll, pollin, PollFd};
pub(crate) use process::{
    close_inherited, die_with_parent, exit_child, fork, reap_child, signal_child, signal_group,
    spawn_settled, ChildExit, Forked, Pid, Signal,
};
pub(crate) use readiness::Interest;
pub(crate) use select::{select, FdSet};
pub(crate) use shared_mem::SharedMem;
pub(crate) use sigio::{Ready, SignalDriven};
pub(crate) use signals::{route_stop_signals, stop_signals, take_over_stop_signals};
pub(crate) use socket::{bind_address_no_port, peer_uid, recv_datagram};
pub use stderr::RawStderr;
