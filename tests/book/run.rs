//! A page's `console` blocks run as a reader would type them: each `$` line by bash in a
//! directory of the page's own, `switchboard` on the PATH, its output (stdout and stderr, as a
//! terminal shows both) compared with the page. A command ending in `&` runs in the
//! background until the page is done (then SIGINT, as Ctrl-C); the lines shown under it are
//! the first it prints.

use crate::common::{bin, scratch};
use crate::page::{blocks, matches, root, Step};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one foreground command may take (the longest lesson takes about 25 s).
const PATIENCE: Duration = Duration::from_secs(120);

/// Runs every `console` block of `page` (a path under the repository). Returns what went
/// wrong, one line per command, or nothing.
pub fn run_page(page: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(page).unwrap();
    let name = page
        .strip_prefix(root())
        .unwrap_or(page)
        .display()
        .to_string();
    let dir = scratch("book-page");
    // The repository's scripts, as a reader in a clone has them.
    std::os::unix::fs::symlink(root().join("scripts"), dir.join("scripts")).unwrap();
    let mut background: Vec<Child> = Vec::new();
    let mut failures = Vec::new();
    'blocks: for block in blocks(&text).iter().filter(|b| b.info == "console") {
        for step in crate::page::steps(block) {
            if let Some(why) = cannot_run_here(&step.command) {
                eprintln!(
                    "{name}:{}: not run here ({why}): {}",
                    step.line, step.command
                );
                continue 'blocks;
            }
            eprintln!("{name}:{}: $ {}", step.line, step.command);
            let result = if step.background {
                start(&dir, &step).map(|child| background.push(child))
            } else {
                run(&dir, &step)
            };
            if let Err(why) = result {
                failures.push(format!("{name}:{}: `{}`: {why}", step.line, step.command));
                continue 'blocks;
            }
        }
    }
    for child in background.iter_mut().rev() {
        stop(child);
    }
    let _ = std::fs::remove_dir_all(&dir);
    failures
}

/// Why a command cannot run on this machine, if it cannot: it needs MariaDB and none was
/// started, or packets and this is not root. Fatal where the test script says it is there.
fn cannot_run_here(command: &str) -> Option<&'static str> {
    if command.contains("$MYSQL_URL") && std::env::var_os("SWITCHBOARD_TEST_MYSQL").is_none() {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_MYSQL").is_none(),
            "the test script started MariaDB, but SWITCHBOARD_TEST_MYSQL is not set"
        );
        return Some("no MariaDB: set SWITCHBOARD_TEST_MYSQL");
    }
    let captures = command.contains("trace ") || command.contains("lesson layers");
    if captures && !is_root() {
        assert!(
            std::env::var_os("SWITCHBOARD_REQUIRE_CAPTURE").is_none(),
            "capturing packets needs root"
        );
        return Some("capturing packets needs root");
    }
    None
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// `bash -c COMMAND` in `dir`, with this build's `switchboard` first on the PATH.
fn shell(dir: &Path, command: &str) -> Command {
    let bin_dir = PathBuf::from(bin()).parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut shell = Command::new("bash");
    shell
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .process_group(0);
    if let Ok(url) = std::env::var("SWITCHBOARD_TEST_MYSQL") {
        shell.env("MYSQL_URL", url);
    }
    shell
}

use std::os::unix::process::CommandExt;

/// Runs a foreground command to its end; it must exit 0 and print what the page shows.
fn run(dir: &Path, step: &Step) -> Result<(), String> {
    // One pipe for both streams, in the order they were written, as a terminal shows them.
    let mut child = shell(dir, &format!("exec 2>&1\n{}", step.command))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("bash: {e}"))?;
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            kill_group(&child, libc::SIGKILL);
            let _ = child.wait();
            return Err(format!("still running after {} s", PATIENCE.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Whatever it left in the background holds the pipe open: the group goes with it.
    kill_group(&child, libc::SIGKILL);
    let output = reader.join().unwrap();
    if !status.success() {
        return Err(format!("exited with {status}; it printed:\n{output}"));
    }
    matches(&step.shown, &output)
        .map_err(|line| format!("the page shows `{line}`, which it did not print:\n{output}"))
}

/// Starts a background command and reads as many lines as the page shows under it.
fn start(dir: &Path, step: &Step) -> Result<Child, String> {
    let mut child = shell(dir, &format!("exec {}", step.command))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("bash: {e}"))?;
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (lines, arrived) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while printed.len() < step.shown.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match arrived.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(_) => break,
        }
    }
    // The rest it prints is read and dropped, so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in arrived {});
    let printed = printed.join("\n");
    match matches(&step.shown, &printed) {
        Ok(()) => Ok(child),
        Err(line) => {
            stop(&mut child);
            Err(format!(
                "the page shows `{line}`, which it did not print first:\n{printed}"
            ))
        }
    }
}

/// Ctrl-C, then up to 20 s to drain and exit; then SIGKILL.
fn stop(child: &mut Child) {
    kill_group(child, libc::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_group(child, libc::SIGKILL);
    let _ = child.wait();
}

fn kill_group(child: &Child, signal: i32) {
    // SAFETY: kill has no memory preconditions; the group is the one this test started.
    unsafe { libc::kill(-(child.id() as i32), signal) };
}
