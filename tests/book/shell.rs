//! The `sh` blocks: commands a page shows without their output, because they run for minutes
//! (a whole lab), need what a test cannot have (systemd as the init system, a fleet of
//! network namespaces, another machine), or are this test suite itself. None is run here;
//! each is checked against what it names instead, so a renamed option or command fails:
//! every `switchboard` subcommand and every `--option` it is given must be in that
//! subcommand's `--help`, and every other program must be one of [`OTHERS`], each with the
//! test that runs it for real or the reason nothing can.

use crate::common::bin;
use crate::page::{blocks, programs};
use std::collections::HashMap;
use std::process::Command;

/// The programs other than `switchboard` that a page may show, and where each is exercised.
pub const OTHERS: &[(&str, &str)] = &[
    ("scripts/test.sh", "this test suite's own command (`.ci/run` runs it)"),
    ("scripts/mariadb.sh", "the test script starts the tests' MariaDB with it"),
    ("scripts/fleet.sh", "tests/fleet.rs drives it: up, kill, start, reload, exec, down"),
    ("cargo", "the build itself; `cargo run --release -- ARGS` is `switchboard ARGS`"),
    ("openssl", "tests/tls.rs makes its certificates with these options"),
    ("systemctl", "needs systemd as the init system; tests/activation.rs passes the same socket through systemd-socket-activate"),
    ("systemd-socket-activate", "tests/activation.rs"),
    ("kill", "SIGHUP and SIGTERM: tests/reload.rs and the conformance suite"),
    ("python3", "the plan's client and the trust checks, as the tests run them"),
    ("sqlite3", "the README's questions run as written in tests/queries.rs"),
    ("mariadb", "the README's questions run as written in tests/queries.rs"),
    ("git", "the repository itself"),
    ("mdbook", "the book's own test builds it in both languages"),
    ("msgmerge", "gettext's, for the translators: the catalogue it updates is checked"),
    ("cd", "the shell's own"),
    ("for", "the shell's own"),
    ("do", "the shell's own"),
    ("done", "the shell's own"),
    ("wait", "the shell's own"),
    ("ssh", "another machine: `runs merge` of runs made at once is tested in tests/bench.rs"),
];

/// Checks every `sh` block of `page`; returns what went wrong.
pub fn check_page(name: &str, text: &str, helps: &mut HashMap<String, String>) -> Vec<String> {
    let mut failures = Vec::new();
    for block in blocks(text).iter().filter(|b| b.info == "sh") {
        let mut joined = String::new();
        for (i, line) in block.lines.iter().enumerate() {
            joined.push_str(line.trim_end().trim_end_matches('\\'));
            joined.push(' ');
            if line.trim_end().ends_with('\\') {
                continue;
            }
            let at = format!("{name}:{}", block.line + 1 + i);
            for words in programs(&std::mem::take(&mut joined)) {
                if let Err(why) = check(&words, helps) {
                    failures.push(format!("{at}: {why}"));
                }
            }
        }
    }
    failures
}

fn check(words: &[String], helps: &mut HashMap<String, String>) -> Result<(), String> {
    // NAME=VALUE before a program sets its environment.
    let words: Vec<String> = words
        .iter()
        .skip_while(|w| w.split_once('=').is_some_and(|(name, _)| is_env_name(name)))
        .cloned()
        .collect();
    let Some(program) = words.first().map(String::as_str) else {
        return Ok(());
    };
    let args: &[String] = if program == "switchboard" || program.ends_with("/switchboard") {
        &words[1..]
    } else if words.starts_with(&["cargo".to_string(), "run".to_string()]) {
        match words.iter().position(|w| w == "--") {
            Some(at) => &words[at + 1..],
            None => return Ok(()),
        }
    } else if OTHERS.iter().any(|(name, _)| *name == program) {
        return Ok(());
    } else {
        return Err(format!(
            "`{program}` is neither switchboard nor a program the book's test knows (OTHERS)"
        ));
    };
    // The subcommand (two words for trace's), then its options.
    let mut command = vec![args.first().ok_or("switchboard with no command")?.clone()];
    if command[0] == "trace" {
        command.extend(args.get(1).cloned());
    }
    let key = command.join(" ");
    let help = helps.entry(key.clone()).or_insert_with(|| {
        let out = Command::new(bin())
            .args(&command)
            .arg("--help")
            .output()
            .unwrap();
        if out.status.success() {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            String::new()
        }
    });
    if help.is_empty() {
        return Err(format!("`switchboard {key}` is not a command"));
    }
    for option in args.iter().filter(|a| a.starts_with("--")) {
        let option = option.split('=').next().unwrap();
        let listed = help
            .split(|c: char| !(c.is_alphanumeric() || c == '-'))
            .any(|w| w == option);
        if !listed {
            return Err(format!("`switchboard {key}` has no option {option}"));
        }
    }
    Ok(())
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}
