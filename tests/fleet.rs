//! Many switchboards behind a real load balancer: `scripts/fleet.sh` puts HAProxy (health checks
//! on) over three `switchboard serve --proxy-protocol` instances, each on a host of its own
//! (network namespaces joined by veth pairs), all recording into one MariaDB on another. Under
//! `bench` load from two client hosts at once, one instance is SIGKILLed: HAProxy marks it down,
//! each bench (`--reconnect`) counts the broken connections and goes on, the others serve on;
//! `runs merge` makes the two benches one report, the sum of their parts, whose timeline shows
//! the kill in the second it happened. Then a rolling
//! reload (SIGHUP to each in turn) under load, with clients connecting all the while: no error.
//! The store then holds every completed session exactly once.
//!
//! Needs root and `ip netns`; without them the test says so and passes, unless
//! `SWITCHBOARD_REQUIRE_FLEET` is set (as `scripts/test.sh` sets it where they are).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The balancer's address, as `scripts/fleet.sh` sets it up.
const FRONTEND: &str = "10.77.0.10:8079";
/// The client hosts' addresses (10.77.0.30 and .31): what the instances must see as the peer
/// (PROXY protocol).
const CLIENTS: &str = "tcp://10.77.0.3";

/// A fleet of this test's own (its own namespace names and directory), taken down when dropped.
struct Fleet {
    dir: PathBuf,
    name: String,
}

impl Fleet {
    /// `scripts/fleet.sh up`, or None (the test skips) where namespaces cannot be made.
    fn up() -> Option<Fleet> {
        let why_not = if unsafe { libc::geteuid() } != 0 {
            Some("not root")
        } else if Command::new("ip").args(["netns", "list"]).output().is_err() {
            Some("no iproute2")
        } else {
            None
        };
        if let Some(why) = why_not {
            assert!(
                std::env::var_os("SWITCHBOARD_REQUIRE_FLEET").is_none(),
                "the fleet test cannot run ({why}), and the test script requires it"
            );
            eprintln!("fleet: {why}, so no network namespaces: skipping");
            return None;
        }
        let fleet = Fleet {
            dir: scratch("fleet"),
            name: format!("sbt{}", std::process::id() % 100_000),
        };
        let out = fleet
            .command(&["up"])
            .output()
            .expect("run scripts/fleet.sh");
        if !out.status.success() {
            // Root without the right to make namespaces (a container, say) is a skip, unless
            // the test script found that they work.
            assert!(
                std::env::var_os("SWITCHBOARD_REQUIRE_FLEET").is_none(),
                "fleet.sh up: {}",
                both(&out)
            );
            eprintln!("fleet: fleet.sh up failed, skipping: {}", both(&out));
            return None;
        }
        Some(fleet)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fleet.sh"));
        c.args(args)
            .env("FLEET_DIR", &self.dir)
            .env("FLEET_NAME", &self.name)
            .env("SWITCHBOARD", bin())
            .stdin(Stdio::null());
        c
    }

    /// Runs `scripts/fleet.sh ARGS` to the end; its output. A failure fails the test.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run scripts/fleet.sh");
        assert!(out.status.success(), "fleet.sh {args:?}: {}", both(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `switchboard ARGS` on client host `host` (`client`, `client2`), in the background.
    fn spawn_on(&self, host: &str, args: &[&str]) -> Child {
        let mut full = vec!["exec", host, "switchboard"];
        full.extend_from_slice(args);
        self.command(&full)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start on the client host")
    }

    /// `switchboard ARGS` against the fleet's store, from the client host; its output.
    fn ask_store(&self, args: &[&str]) -> String {
        let url = std::fs::read_to_string(self.dir.join("store")).unwrap();
        let mut full = args.to_vec();
        full.extend_from_slice(&["--store", url.trim()]);
        let out = self.spawn_on("client", &full).wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", both(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pid serving as instance `n` now (its pid file).
    fn pid(&self, n: u32) -> i32 {
        let text = std::fs::read_to_string(self.dir.join(format!("sb{n}.pid"))).unwrap();
        text.trim().parse().unwrap()
    }

    /// HAProxy's view: each instance's state (UP, DOWN, ...), from `fleet.sh status`.
    fn balancer(&self) -> BTreeMap<String, String> {
        let status = self.run(&["status"]);
        status
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let name = words.next()?;
                let state = words.next()?;
                (name.starts_with("sb") && words.next() == Some("now"))
                    .then(|| (name.to_string(), state.to_string()))
            })
            .collect()
    }

    /// Waits (bounded) until HAProxy shows instance `name` in `state`; how long it took.
    fn wait_balancer(&self, name: &str, state: &str) -> Duration {
        let start = Instant::now();
        loop {
            let view = self.balancer();
            if view.get(name).map(String::as_str) == Some(state) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < PATIENCE,
                "HAProxy did not show {name} {state}: {view:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.command(&["down"]).output();
    }
}

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn alive(pid: i32) -> bool {
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A bench's `--json` report, once it has finished; `clean` says whether it exited 0.
fn report(bench: Child) -> (serde_json::Value, bool) {
    let out = bench.wait_with_output().unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bench's report ({e}): {}", both(&out)));
    (json, out.status.success())
}

fn field(report: &serde_json::Value, name: &str) -> u64 {
    report[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {report}"))
}

/// Clients that connect, ask once and close, one after another from the client host, until
/// `stop`: each must be answered. Returns how many were.
fn churn(namespace: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        // This thread alone joins the client host's network.
        let ns = std::fs::File::open(format!("/var/run/netns/{namespace}")).unwrap();
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let mut answered = 0;
        while !stop.load(Ordering::Relaxed) && answered < 100_000 {
            let mut c = std::net::TcpStream::connect(FRONTEND).expect("connect through HAProxy");
            c.set_read_timeout(Some(PATIENCE)).unwrap();
            let request = format!("client {answered}");
            c.write_all(request.as_bytes()).unwrap();
            let mut reply = vec![0; request.len()];
            c.read_exact(&mut reply)
                .unwrap_or_else(|e| panic!("client {answered} not answered: {e}"));
            assert_eq!(reply, request.to_uppercase().as_bytes());
            answered += 1;
        }
        answered
    })
}

/// `runs merge` of the two benches run at once: every count the sum of the two, and in the
/// merged timeline the kill (2 s in) is where it happened: no error in the first second,
/// errors after it, the seconds adding up to the whole.
fn merged_is_the_sum_and_shows_the_kill(fleet: &Fleet, runs: &[serde_json::Value]) {
    let files: Vec<PathBuf> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let f = fleet.dir.join(format!("bench{i}.json"));
            std::fs::write(&f, run.to_string()).unwrap();
            f
        })
        .collect();
    let out = Command::new(bin())
        .args(["runs", "merge", "--json"])
        .args(&files)
        .output()
        .unwrap();
    // Exit 1 is the bench's own verdict (errors); the report is printed either way.
    let merged: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("runs merge's report ({e}): {}", both(&out)));
    for name in ["msgs", "errors", "connected", "conns", "mismatches"] {
        let sum: u64 = runs.iter().map(|r| field(r, name)).sum();
        assert_eq!(field(&merged, name), sum, "{name}: {merged}");
    }
    let timeline = merged["timeline"].as_array().expect("a merged timeline");
    let per_second = |key: &str| -> Vec<u64> { timeline.iter().map(|s| field(s, key)).collect() };
    let (replies, errors) = (per_second("replies"), per_second("errors"));
    eprintln!("merged timeline: replies {replies:?}, errors {errors:?}");
    assert_eq!(replies.iter().sum::<u64>(), field(&merged, "msgs"));
    assert_eq!(errors.iter().sum::<u64>(), field(&merged, "errors"));
    assert_eq!(errors[0], 0, "nothing broke before the kill: {errors:?}");
    assert!(
        errors[1..].iter().any(|&e| e > 0),
        "the kill shows: {errors:?}"
    );
    let whole = &replies[..replies.len().saturating_sub(1)]; // the last may be cut short
    assert!(
        whole.iter().all(|&r| r > 0),
        "the others served every second: {replies:?}"
    );
}

#[test]
fn an_instance_dies_and_the_fleet_serves_on_then_reloads_without_an_error() {
    let Some(fleet) = Fleet::up() else {
        return;
    };
    let frontend = format!("tcp://{FRONTEND}");
    let load = |host: &str, reconnect: bool, secs: &str| {
        let mut args = vec![
            "bench",
            &frontend,
            "--conns",
            "30",
            "--rate",
            "1500",
            "--duration",
            secs,
            "--warmup",
            "0",
            "--json",
            "--no-store",
        ];
        if reconnect {
            args.push("--reconnect");
        }
        fleet.spawn_on(host, &args)
    };

    // An instance dies under load from two client hosts.
    let benches = [load("client", true, "6s"), load("client2", true, "6s")];
    std::thread::sleep(Duration::from_secs(2));
    let killed = fleet.pid(2);
    fleet.run(&["kill", "2"]);
    let noticed = fleet.wait_balancer("sb2", "DOWN");
    eprintln!("HAProxy marked the killed instance down in {noticed:?}");
    let crashes = benches.map(|b| report(b).0);
    for crash in &crashes {
        let errors = field(crash, "errors");
        assert!(
            errors > 0,
            "the killed instance's connections broke: {crash}"
        );
        assert_eq!(
            errors,
            crash["errors_by_kind"]["closed"].as_u64().unwrap_or(0)
                + crash["errors_by_kind"]["reset"].as_u64().unwrap_or(0),
            "only broken connections: {crash}"
        );
        assert_eq!(field(crash, "mismatches"), 0, "{crash}");
        assert_eq!(
            field(crash, "connected"),
            30 + errors,
            "every broken connection was made again: {crash}"
        );
    }
    assert!(!alive(killed));
    let errors: u64 = crashes.iter().map(|c| field(c, "errors")).sum();
    let connected: u64 = crashes.iter().map(|c| field(c, "connected")).sum();
    merged_is_the_sum_and_shows_the_kill(&fleet, &crashes);
    let view = fleet.balancer();
    assert_eq!(view["sb1"], "UP", "{view:?}");
    assert_eq!(view["sb3"], "UP", "{view:?}");

    // Back to three, then a rolling reload under load, clients arriving all the while.
    fleet.run(&["start", "2"]);
    fleet.wait_balancer("sb2", "UP");
    let before: Vec<i32> = (1..=3).map(|n| fleet.pid(n)).collect();
    let bench = load("client", false, "8s");
    let stop = Arc::new(AtomicBool::new(false));
    let clients = churn(format!("{}-client", fleet.name), stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    for n in 1..=3 {
        fleet.run(&["reload", &n.to_string()]);
        std::thread::sleep(Duration::from_millis(700));
    }
    stop.store(true, Ordering::Relaxed);
    let churned = clients.join().expect("every arriving client was answered");
    let (reload, clean) = report(bench);
    assert!(clean, "no error during the rolling reload: {reload}");
    assert_eq!(field(&reload, "connected"), 30, "{reload}");
    assert!(churned > 0);
    eprintln!("{churned} clients connected and were answered during the reloads");
    for (n, old) in (1..=3).zip(&before) {
        assert_ne!(fleet.pid(n), *old, "instance {n} handed over");
    }
    // The old instances drain their (now closed) connections and exit.
    let deadline = Instant::now() + PATIENCE;
    while before.iter().any(|&pid| alive(pid)) {
        assert!(Instant::now() < deadline, "old instances still running");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Stopped gracefully, the instances have written everything: every completed session of the
    // client host once (the killed instance's broken ones are lost with it; the probe each bench
    // makes first sends nothing).
    for n in 1..=3 {
        fleet.run(&["stop", &n.to_string()]);
    }
    let sessions = fleet.ask_store(&["sessions", "--json", "--last", "1000000"]);
    let rows: Vec<serde_json::Value> = sessions
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let served = rows
        .iter()
        .filter(|r| r["peer"].as_str().unwrap().starts_with(CLIENTS) && field(r, "msgs_in") > 0)
        .count() as u64;
    assert_eq!(
        served,
        connected - errors + field(&reload, "connected") + churned,
        "completed sessions in the store"
    );
    // `stats` adds up the instances: the first three, the restarted one, three successors.
    let stats = fleet.ask_store(&["stats"]);
    let all = stats.lines().next().unwrap();
    assert!(
        all.starts_with(&format!("all 7 instances: {} sessions", rows.len())),
        "{stats}"
    );
}
