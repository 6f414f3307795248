//! The plan's interactive client (`>>: `), and its pipe mode for scripts.

use crate::client::connection::Client;
use crate::client::error::ClientError;
use std::io::{self, BufRead, Write};

/// The plan's prompt.
pub const PROMPT: &str = ">>: ";

/// The plan's client loop on a terminal: prompt `>>: `, skip empty input, send, print the
/// reply. Line editing and history come from rustyline; Ctrl-D or Ctrl-C ends it.
pub fn interactive(client: &mut Client) -> Result<(), ClientError> {
    let mut editor = rustyline::DefaultEditor::new().map_err(io::Error::other)?;
    let mut stdout = io::stdout();
    loop {
        let line = match editor.readline(PROMPT) {
            Ok(line) => line,
            Err(
                rustyline::error::ReadlineError::Eof | rustyline::error::ReadlineError::Interrupted,
            ) => return Ok(()),
            Err(e) => return Err(io::Error::other(e).into()),
        };
        let msg = line.trim();
        if msg.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(msg);
        let reply = client.request(msg.as_bytes())?;
        stdout.write_all(&reply)?;
        stdout.write_all(b"\n")?;
    }
}

/// Pipe mode: each input line (without its line ending) is one request, each reply is printed
/// on a line of its own. Empty lines are skipped, as the prompt does. Returns how many requests
/// were answered.
pub fn pipe(
    client: &mut Client,
    input: impl BufRead,
    mut output: impl Write,
) -> Result<u64, ClientError> {
    let mut answered = 0;
    for line in input.split(b'\n') {
        let line = line?;
        let msg = line.strip_suffix(b"\r").unwrap_or(&line);
        if msg.is_empty() {
            continue;
        }
        let reply = client.request(msg)?;
        output.write_all(&reply)?;
        output.write_all(b"\n")?;
        output.flush()?;
        answered += 1;
    }
    Ok(answered)
}
