//! Capturing the frames of one exchange: a thread reads a packet socket on one interface and
//! keeps the frames to or from one port (and ARP, which finds the peer's MAC address).

use crate::sys::PacketSocket;
use crate::trace::decode::decode;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// When the kernel took it, µs since the Unix epoch.
    pub at_us: i64,
    /// Its length on the wire; `bytes` holds all of it.
    pub len: usize,
    /// The frame, from its Ethernet header on.
    pub bytes: Vec<u8>,
}

/// Which frames a capture keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    /// TCP or UDP to or from this port.
    pub port: u16,
    /// ARP too.
    pub arp: bool,
}

/// Why a capture could not start or went wrong.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The process may not open a packet socket.
    #[error("capturing packets needs CAP_NET_RAW: run it as root (sudo), or give the binary the capability once: sudo setcap cap_net_raw+ep {exe}")]
    NotPermitted {
        /// This executable, for the setcap command.
        exe: String,
    },
    /// Anything else.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A capture running in a thread of its own; frames come through [`Capture::frames`].
pub struct Capture {
    stop: Arc<AtomicBool>,
    frames: Receiver<Frame>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// How long a read waits before the thread looks whether it should stop.
const POLL: Duration = Duration::from_millis(50);
/// How long the kernel may take to start stamping frames.
const STAMPS_ON: Duration = Duration::from_millis(20);
/// The largest frame kept whole: loopback's 64 KiB MTU and its Ethernet header, with room.
const LARGEST: usize = 70_000;

impl Capture {
    /// Starts capturing on `interface`. The socket is open when this returns, so what the
    /// caller does next is captured.
    pub fn start(interface: &str, filter: Filter) -> Result<Capture, CaptureError> {
        let socket = PacketSocket::open(interface, filter.port, filter.arp, POLL).map_err(|e| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                let exe = std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "switchboard".into());
                CaptureError::NotPermitted { exe }
            } else {
                CaptureError::Io(e)
            }
        })?;
        // The kernel starts stamping frames a moment after the first socket asks: give it
        // that moment, so the exchange's frames carry the times they were taken.
        std::thread::sleep(STAMPS_ON);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, frames) = mpsc::channel();
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let mut buf = vec![0u8; LARGEST];
                let mut last_us = 0;
                while !stopping.load(Relaxed) {
                    let Some((len, at)) = socket.recv(&mut buf)? else {
                        continue;
                    };
                    let bytes = &buf[..len.min(buf.len())];
                    // A frame the kernel did not stamp gets the time it was read, later than
                    // it was taken: times never go back, so the frames keep their order.
                    let at = at.unwrap_or_else(SystemTime::now);
                    let at_us = at
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_micros() as i64)
                        .max(last_us);
                    last_us = at_us;
                    let p = decode(bytes, len, at_us);
                    if p.has_port(filter.port) || (filter.arp && p.is_arp()) {
                        let frame = Frame {
                            at_us,
                            len,
                            bytes: bytes.to_vec(),
                        };
                        if tx.send(frame).is_err() {
                            break;
                        }
                    }
                }
                Ok(())
            })?;
        Ok(Capture {
            stop,
            frames,
            thread: Some(thread),
        })
    }

    /// The frames captured so far, as they come.
    pub fn frames(&self) -> &Receiver<Frame> {
        &self.frames
    }

    /// Stops the capture and returns the frames not yet taken, in order.
    pub fn stop(mut self) -> io::Result<Vec<Frame>> {
        self.stop.store(true, Relaxed);
        let result = self.thread.take().map(|t| t.join());
        let rest: Vec<Frame> = self.frames.try_iter().collect();
        match result {
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(io::Error::other("the capture thread panicked")),
            _ => Ok(rest),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `frames` as a pcap file that tcpdump and Wireshark read.
pub fn write_pcap(path: &std::path::Path, frames: &[Frame]) -> io::Result<()> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let header = PcapHeader {
        snaplen: LARGEST as u32,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(file, header).map_err(io::Error::other)?;
    for f in frames {
        let at = Duration::from_micros(f.at_us.max(0) as u64);
        let packet =
            PcapPacket::new(at, f.len as u32, f.bytes.as_slice()).map_err(io::Error::other)?;
        writer.write_packet(&packet).map_err(io::Error::other)?;
    }
    writer.flush().map_err(io::Error::other)
}
