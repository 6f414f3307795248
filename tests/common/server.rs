//! A real `switchboard serve` process for a test: started on a free port in a scratch
//! directory of its own, its log and stdout read, stopped by its PID; and what it holds in memory.

#![allow(dead_code)] // each test binary uses its own part of these helpers

use super::*;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

/// Runs `command` with at most `n` open files (its soft and hard `RLIMIT_NOFILE`).
pub fn limit_open_files(command: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// A directory of this test process's own, for Unix sockets and logs. The first call also
/// removes what test processes that are gone left behind, so runs do not pile up in /tmp.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_dead_scratch);
    let dir = std::env::temp_dir().join(format!(
        "sb-test-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        name
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes `sb-test-PID-*` directories whose process no longer runs.
fn remove_dead_scratch() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("sb-test-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A running `switchboard serve`, killed when dropped if it is still running.
pub struct ServerProcess {
    pub child: Child,
    pub addr: String,
    stdout: BufReader<ChildStdout>,
    pub log: PathBuf,
    /// The server's working directory.
    pub dir: PathBuf,
}

impl ServerProcess {
    /// Starts `switchboard serve ADDR ARGS...` and waits for its `listening on` line.
    pub fn start(addr: &str, args: &[&str]) -> ServerProcess {
        ServerProcess::start_in(&scratch("server"), addr, args)
    }

    /// Like [`start`](ServerProcess::start), working in `dir`.
    pub fn start_in(dir: &std::path::Path, addr: &str, args: &[&str]) -> ServerProcess {
        ServerProcess::start_with(dir, addr, args, None)
    }

    /// Like [`start_in`](ServerProcess::start_in), the server allowed at most `open_files`
    /// open files (soft and hard limit), when given.
    pub fn start_with(
        dir: &std::path::Path,
        addr: &str,
        args: &[&str],
        open_files: Option<u64>,
    ) -> ServerProcess {
        ServerProcess::start_exe(std::path::Path::new(bin()), dir, addr, args, open_files)
    }

    /// Like [`start_with`](ServerProcess::start_with), running the executable at `exe`.
    pub fn start_exe(
        exe: &std::path::Path,
        dir: &std::path::Path,
        addr: &str,
        args: &[&str],
        open_files: Option<u64>,
    ) -> ServerProcess {
        let dir = dir.to_path_buf();
        let log = dir.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut command = Command::new(exe);
        command
            .current_dir(&dir) // the default store, switchboard.db, lands here
            .arg("serve")
            .arg(addr)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(n) = open_files {
            limit_open_files(&mut command, n);
        }
        let mut child = command.spawn().expect("spawn switchboard serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = match line.trim().strip_prefix("listening on ") {
            Some(a) => a.to_string(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not start: stdout {line:?}, log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        ServerProcess {
            child,
            addr,
            stdout,
            log,
            dir,
        }
    }

    /// The next line the server printed on stdout (after `listening on`).
    pub fn next_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// A TCP server of `model` on a free loopback port.
    pub fn tcp(model: &str, args: &[&str]) -> ServerProcess {
        let mut all = vec!["--model", model];
        all.extend_from_slice(args);
        ServerProcess::start("tcp://127.0.0.1:0", &all)
    }

    /// The `HOST:PORT` of a TCP server.
    pub fn sockaddr(&self) -> &str {
        self.addr.strip_prefix("tcp://").expect("a tcp server")
    }

    /// A TCP or Unix server of `model`, as `transport` says, with a socket of its own.
    pub fn stream(model: &str, transport: &str, args: &[&str]) -> ServerProcess {
        let mut all = vec!["--model", model];
        all.extend_from_slice(args);
        match transport {
            "tcp" => ServerProcess::start("tcp://127.0.0.1:0", &all),
            "unix" => {
                let path = scratch("unix").join("sb.sock");
                ServerProcess::start(&format!("unix://{}", path.display()), &all)
            }
            other => panic!("no transport {other}"),
        }
    }

    /// Connects over the server's transport; reads and writes time out after the patience.
    pub fn connect(&self) -> TestConn {
        dial(&self.addr).expect("connect to the server")
    }

    /// The socket file of a Unix server.
    pub fn unix_path(&self) -> Option<PathBuf> {
        self.addr.strip_prefix("unix://").map(PathBuf::from)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Sends SIGTERM and waits for the exit; returns the status and the rest of stdout.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// Waits (bounded) for the process to exit; returns the status and the rest of stdout.
    pub fn wait_exit(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "server did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (status, rest)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "log never said {needle:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Raises this test process's soft limit on open files to its hard limit, for tests that hold
/// many connections.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a live rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The proportional set size, in bytes, of `pid` and every process under it.
pub fn pss(pid: u32) -> usize {
    let mut total = 0;
    let mut pids = vec![pid];
    while let Some(pid) = pids.pop() {
        let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue; // gone meanwhile
        };
        let kib: usize = rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        total += kib * 1024;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}
