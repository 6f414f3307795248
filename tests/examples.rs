//! The examples run as a reader would run them: real processes over real sockets.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

fn example(name: &str) -> Command {
    // cargo builds the examples next to the test binaries' directory before running tests.
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples");
    Command::new(dir.join(name))
}

/// Starts an example server and returns it with the address from its first line.
fn start(mut cmd: Command) -> (KillOnDrop, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("example built");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // Keep reading what it prints, so its prints never fail on a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr = line
        .split_whitespace()
        .find(|w| w.contains("127.0.0.1:"))
        .expect(&line)
        .to_string();
    (KillOnDrop(child), addr)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_seed_server_and_client_talk() {
    let mut server = example("seed_server");
    server.arg("127.0.0.1:0");
    let (_server, addr) = start(server);
    for _ in 0..2 {
        // Twice: the server's connection loop takes the next call after the first hangs up.
        let mut client = example("seed_client")
            .arg(&addr)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        client
            .stdin
            .take()
            .unwrap()
            .write_all(b"hello world\n\n  \nagain\n")
            .unwrap();
        let out = client.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            ">>: HELLO WORLD\n>>: >>: >>: AGAIN\n>>: "
        );
    }
}

#[test]
fn the_custom_service_counts_words_per_connection() {
    let mut server = example("custom_service");
    server.args(["tcp://127.0.0.1:0", "iterative"]);
    let (_server, addr) = start(server);
    let out = Command::new(bin())
        .args(["connect", &addr, "--frame", "line"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(b"hello world\nthree more words\nquit\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2 words, 2 in all\n3 words, 5 in all\nbye\n"
    );
}
