//! `switchboard trace`: one exchange captured and unwrapped layer by layer.

use super::{parse_addr, parse_duration, print_json, TalkArgs, Usage};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use switchboard::trace::{self, Capture, Conversation, Event, Filter, Frame};
use switchboard::Addr;

/// Capture the packets of an exchange and show each layer: link, network, transport,
/// application. Needs CAP_NET_RAW (root, or `setcap cap_net_raw+ep` on the binary).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  sudo switchboard trace send tcp://127.0.0.1:8079 hello\n  sudo switchboard trace send udp://[::1]:9000 hi --pcap hi.pcap\n  sudo switchboard trace watch tcp://127.0.0.1:8079 --count 10\n  sudo switchboard trace hosts"
)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Send MESSAGE to ADDR (tcp:// or udp://), read the reply, close: every packet it
    /// causes, beside the socket call that caused it.
    Send {
        /// The server: tcp://HOST:PORT or udp://HOST:PORT.
        #[arg(value_parser = parse_addr)]
        addr: Addr,
        /// What to send.
        message: String,
        #[command(flatten)]
        output: Output,
    },
    /// The plan's `>>: ` client talking to ADDR while its packets are captured; when it ends
    /// (Ctrl-D, or stdin's end), every packet of the conversation, layer by layer.
    Connect {
        /// The server: tcp://HOST:PORT.
        #[arg(value_parser = parse_addr)]
        addr: Addr,
        #[command(flatten)]
        talk: TalkArgs,
        #[command(flatten)]
        output: Output,
    },
    /// Two hosts on a network of their own (network namespaces joined by a veth pair): a
    /// server on one, MESSAGE sent from the other, captured there — real MAC addresses, and
    /// ARP finding the server's from its IP address. Needs root; removes all it made.
    Hosts {
        /// What to send.
        #[arg(default_value = "hello")]
        message: String,
        /// Over UDP instead of TCP.
        #[arg(long)]
        udp: bool,
        /// The server's port.
        #[arg(long, default_value_t = 8079)]
        port: u16,
        /// Also write the packets to FILE as pcap, which tcpdump -r and Wireshark open.
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
        /// Print the decoded packets (and calls) as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Capture the traffic of a server already running (any server) on ADDR's port, until
    /// --count packets, --duration, or Ctrl-C.
    Watch {
        /// The server: tcp://HOST:PORT or udp://HOST:PORT.
        #[arg(value_parser = parse_addr)]
        addr: Addr,
        /// Stop after this many packets.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this long: seconds or with a unit (500ms, 10s).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        #[command(flatten)]
        output: Output,
    },
}

/// Where to capture and what to write.
#[derive(clap::Args)]
struct Output {
    /// The network interface to capture on, as `ip link` names it.
    #[arg(long, default_value = "lo")]
    interface: String,
    /// Also write the packets to FILE as pcap, which tcpdump -r and Wireshark open.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Print the decoded packets (and calls) as JSON instead.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Send {
            addr,
            message,
            output,
        } => send(&addr, message.as_bytes(), &output),
        What::Watch {
            addr,
            count,
            duration,
            output,
        } => watch(&addr, count, duration, &output),
        What::Connect { addr, talk, output } => connect(&addr, &talk, &output),
        What::Hosts {
            message,
            udp,
            port,
            pcap,
            json,
        } => hosts(&message, udp, port, pcap, json),
    }
}

/// The socket address of a tcp:// or udp:// address; a usage error for any other.
fn network(addr: &Addr) -> Result<(SocketAddr, bool), Usage> {
    match addr {
        Addr::Tcp(sa) => Ok((*sa, true)),
        Addr::Udp(sa) => Ok((*sa, false)),
        other => Err(Usage(format!(
            "{other}: a trace shows packets on a network, so tcp:// or udp:// (a Unix socket's bytes never become packets)"
        ))),
    }
}

fn send(addr: &Addr, message: &[u8], output: &Output) -> anyhow::Result<()> {
    let (sa, tcp) = network(addr)?;
    let trace = if tcp {
        trace::send_tcp(sa, message, &output.interface)?
    } else {
        trace::send_udp(sa, message, &output.interface)?
    };
    if let Some(path) = &output.pcap {
        trace::capture::write_pcap(path, &trace.frames)?;
    }
    if output.json {
        return Ok(print_json(&mut std::io::stdout().lock(), &trace.events)?);
    }
    print!("{}", trace::render(&trace.events));
    println!("{}", legend(message.len(), &trace.frames));
    Ok(())
}

/// Why the first frame carrying the message is as long as it is.
fn legend(message: usize, frames: &[Frame]) -> String {
    let carrying = trace::annotate(frames).into_iter().find_map(|e| match e {
        Event::Packet { packet, .. } if packet.payload.len() == message && message > 0 => {
            Some(packet)
        }
        _ => None,
    });
    let Some(p) = carrying else {
        return String::new();
    };
    let link = p.link.as_ref().map_or(0, |l| l.header_len);
    let net = match &p.network {
        Some(trace::decode::Network::Ip { header_len, .. }) => *header_len,
        _ => 0,
    };
    let transport = match &p.transport {
        Some(trace::decode::Transport::Tcp { header_len, .. })
        | Some(trace::decode::Transport::Udp { header_len, .. }) => *header_len,
        None => 0,
    };
    format!(
        "\nThe message ({message} bytes) went out as a {}-byte frame: {link} bytes of Ethernet header, \
         {net} of IP header, {transport} of {} header, and the {message} bytes themselves. \
         Each layer wraps the one above it; the receiver unwraps them in turn.",
        p.frame_len,
        if matches!(p.transport, Some(trace::decode::Transport::Udp { .. })) { "UDP" } else { "TCP" },
    )
}

fn watch(
    addr: &Addr,
    count: Option<usize>,
    duration: Option<Duration>,
    output: &Output,
) -> anyhow::Result<()> {
    let (sa, _) = network(addr)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let capture = Capture::start(
        &output.interface,
        Filter {
            port: sa.port(),
            arp: false,
        },
    )?;
    let began = Instant::now();
    let mut conversation = Conversation::default();
    let mut frames = Vec::new();
    let mut text = trace::render::Text::default();
    let done = |frames: &Vec<Frame>| {
        stop.load(std::sync::atomic::Ordering::Relaxed)
            || count.is_some_and(|n| frames.len() >= n)
            || duration.is_some_and(|d| began.elapsed() >= d)
    };
    while !done(&frames) {
        let Ok(frame) = capture.frames().recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let packet = trace::decode(&frame.bytes, frame.len, frame.at_us);
        let note = conversation.note(&packet);
        let event = Event::Packet {
            packet: Box::new(packet),
            note,
        };
        if output.json {
            println!("{}", serde_json::to_string(&event)?);
        } else {
            print!("{}", text.event(&event));
        }
        frames.push(frame);
    }
    drop(capture);
    if let Some(path) = &output.pcap {
        trace::capture::write_pcap(path, &frames)?;
    }
    Ok(())
}

fn connect(addr: &Addr, talk: &TalkArgs, output: &Output) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let (sa, tcp) = network(addr)?;
    if !tcp {
        return Err(Usage("trace connect talks over TCP; for UDP use trace send".into()).into());
    }
    let filter = Filter {
        port: sa.port(),
        arp: output.interface != "lo",
    };
    let capture = Capture::start(&output.interface, filter)?;
    let mut client = talk.connect(addr)?;
    let talked = if std::io::stdin().is_terminal() {
        switchboard::client::interactive(&mut client)
    } else {
        let stdout = std::io::stdout().lock();
        switchboard::client::pipe(&mut client, std::io::stdin().lock(), stdout).map(drop)
    };
    drop(client); // the close, and its packets
    std::thread::sleep(Duration::from_millis(200));
    let frames = capture.stop()?;
    talked?;
    if let Some(path) = &output.pcap {
        trace::capture::write_pcap(path, &frames)?;
    }
    let events = trace::annotate(&frames);
    if output.json {
        return Ok(print_json(&mut std::io::stdout().lock(), &events)?);
    }
    println!("\nThe conversation on the wire:");
    print!("{}", trace::render(&events));
    Ok(())
}

fn hosts(
    message: &str,
    udp: bool,
    port: u16,
    pcap: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    use switchboard::trace::hosts::{Hosts, CLIENT_IP, SERVER_IP, SUBNET};
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Usage(
            "trace hosts makes two network namespaces, which needs root: run it with sudo".into(),
        )
        .into());
    }
    // Ctrl-C reaches the hosts' processes, which end; this one lives on to remove the hosts.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, interrupted)?;
    let exe = std::env::current_exe()?;
    let hosts = Hosts::create()?;
    let scheme = if udp { "udp" } else { "tcp" };
    let addr = format!("{scheme}://{SERVER_IP}:{port}");
    let mut server = hosts
        .command_in(&hosts.server, &exe)
        .args(["serve", &addr, "--no-store", "--model", "threads"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let listening = {
        use std::io::BufRead;
        let mut line = String::new();
        let stdout = server.stdout.take().expect("piped");
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        line.starts_with("listening on")
    };
    if !listening {
        let _ = server.kill();
        let _ = server.wait();
        anyhow::bail!("the server on {SERVER_IP} did not start");
    }
    if !json {
        println!(
            "Two hosts on {SUBNET}, joined by a veth pair and nothing else: the server at {SERVER_IP} \
             (network namespace {}), the client at {CLIENT_IP} ({}), captured on the client's \
             side ({}).\n",
            hosts.server, hosts.client, hosts.client_link
        );
    }
    let mut client = hosts.command_in(&hosts.client, &exe);
    client.args([
        "trace",
        "send",
        &addr,
        message,
        "--interface",
        &hosts.client_link,
    ]);
    if json {
        client.arg("--json");
    }
    if let Some(path) = &pcap {
        client.arg("--pcap").arg(std::path::absolute(path)?);
    }
    let status = client.status();
    let _ = server.kill();
    let _ = server.wait();
    drop(hosts);
    anyhow::ensure!(
        status?.success(),
        "the exchange between the two hosts failed (above)"
    );
    Ok(())
}
