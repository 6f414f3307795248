//! A page of the book or the README, read for what it shows: its code blocks, and in a
//! `console` block the commands and the output each is shown with.

use std::path::{Path, PathBuf};

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The book's sources.
pub fn book() -> PathBuf {
    root().join("docs/book")
}

/// Every Markdown page the book's sources hold (the lab's own results among them), sorted.
pub fn book_pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut pages = Vec::new();
    walk(&book().join("src"), &mut pages);
    pages.sort();
    pages
}

/// A fenced code block: its info string (`console`, `sh`, `text`...), its lines, and the line
/// of the page it starts on.
pub struct Block {
    pub info: String,
    pub lines: Vec<String>,
    pub line: usize,
}

/// The fenced code blocks of a Markdown text, in order.
pub fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            None if trimmed.starts_with("```") => {
                open = Some(Block {
                    info: trimmed.trim_start_matches('`').trim().to_string(),
                    lines: Vec::new(),
                    line: n + 1,
                })
            }
            None => {}
            Some(block) if trimmed.starts_with("```") => blocks.push(block),
            Some(mut block) => {
                block.lines.push(line.to_string());
                open = Some(block);
            }
        }
    }
    assert!(open.is_none(), "a code block is never closed");
    blocks
}

/// One command of a `console` block: what follows `$ ` (with lines ending in `\` joined),
/// whether it ends in `&` (started in the background, kept until the page is done), and the
/// output shown under it.
pub struct Step {
    pub command: String,
    pub background: bool,
    pub shown: Vec<String>,
    pub line: usize,
}

/// The commands of a `console` block and the output shown under each.
pub fn steps(block: &Block) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut continued = false;
    for (i, line) in block.lines.iter().enumerate() {
        if continued {
            let step = steps.last_mut().unwrap();
            step.command.push(' ');
            step.command.push_str(line.trim());
        } else if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: command.trim().to_string(),
                background: false,
                shown: Vec::new(),
                line: block.line + 1 + i,
            });
        } else {
            let step = steps.last_mut().unwrap_or_else(|| {
                panic!("line {}: output before any command", block.line + 1 + i)
            });
            step.shown.push(line.clone());
            continue;
        }
        let step = steps.last_mut().unwrap();
        continued = step.command.ends_with('\\');
        if continued {
            step.command.pop();
        } else if let Some(command) = step.command.strip_suffix('&') {
            step.command = command.trim().to_string();
            step.background = true;
        }
    }
    steps
}

/// What one `sh` line runs: the program of each part of a pipeline or list, with its words.
pub fn programs(command: &str) -> Vec<Vec<String>> {
    let mut programs = vec![Vec::new()];
    for word in words(command) {
        match word.as_str() {
            "|" | "&&" | "||" | ";" | "&" => programs.push(Vec::new()),
            _ => programs.last_mut().unwrap().push(word),
        }
    }
    programs.retain(|p| !p.is_empty());
    programs
}

/// A shell line's words, quotes taken off, a comment dropped.
fn words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') if !in_word => break,
            // Operators end a word even when written against it (`done;`).
            (None, ';' | '|' | '&') => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                words.push(c.to_string());
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Whether `actual` is what `shown` shows, loosely: every number matches any number (figures
/// differ from run to run), `[..]` in a line matches any text, a line `...` any lines (none
/// too), and a run of spaces is one space (columns align to their figures' widths). On a mismatch, the first shown line not found.
pub fn matches(shown: &[String], actual: &str) -> Result<(), String> {
    let shown: Vec<String> = shown.iter().map(|l| blurred(l)).collect();
    let actual: Vec<String> = actual.lines().map(blurred).collect();
    if lines_match(&shown, &actual) {
        return Ok(());
    }
    // Name the first shown line that no line of the output matches, for the message.
    let missing = shown
        .iter()
        .find(|s| s.as_str() != "..." && !actual.iter().any(|a| line_matches(s, a)))
        .cloned()
        .unwrap_or_else(|| "(every line appears, but not in that order or count)".into());
    Err(missing)
}

fn lines_match(shown: &[String], actual: &[String]) -> bool {
    match shown.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => match actual.split_first() {
            Some((line, others)) => line_matches(first, line) && lines_match(rest, others),
            None => false,
        },
    }
}

/// A line against a shown line with `[..]` wildcards: each literal piece found in order, the
/// first at the start and the last at the end.
fn line_matches(shown: &str, line: &str) -> bool {
    let pieces: Vec<&str> = shown.split("[..]").collect();
    if pieces.len() == 1 {
        return shown == line;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !line.starts_with(first) || !line[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// A line as it is compared: numbers blurred, spaces squeezed, none at the end.
fn blurred(line: &str) -> String {
    let line = numbers_blurred(line);
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A line with every number (digits, with the `,` and `.` inside them) replaced by `#`.
fn numbers_blurred(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || (matches!(chars[i], ',' | '.')
                        && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit())))
            {
                i += 1;
            }
            out.push('#');
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn numbers_match_loosely_and_text_exactly() {
        let page = shown(&["throughput  108,907 msgs/s, 6.97 MB/s", "errors      none"]);
        assert!(matches(
            &page,
            "throughput  99 msgs/s, 12.5 MB/s\nerrors      none\n"
        )
        .is_ok());
        assert_eq!(
            matches(
                &page,
                "throughput  99 msgs/s, 12.5 MB/s\nerrors      2 reset\n"
            ),
            Err("errors none".to_string())
        );
        assert!(matches(&page, "throughput  99 msgs/s, 12.5 MB/s\n").is_err());
    }

    #[test]
    fn wildcards_take_lines_and_text() {
        let page = shown(&["listening on tcp://[..]", "...", "done"]);
        assert!(matches(&page, "listening on tcp://[::1]:80\na\nb\ndone").is_ok());
        assert!(matches(&page, "listening on tcp://x\ndone").is_ok());
        assert!(matches(&page, "listening on udp://x\ndone").is_err());
        assert!(matches(&page, "listening on tcp://x\ndone\nmore").is_err());
    }

    #[test]
    fn console_steps_join_continued_lines_and_see_the_background() {
        let block = &blocks("```console\n$ a \\\n  --b &\nout\n$ c\n```\n")[0];
        let steps = steps(block);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].command, "a  --b");
        assert!(steps[0].background);
        assert_eq!(steps[0].shown, vec!["out".to_string()]);
        assert!(!steps[1].background && steps[1].shown.is_empty());
    }

    #[test]
    fn shell_lines_split_into_programs() {
        assert_eq!(
            programs("printf 'a b' | switchboard connect --frame line # note"),
            vec![
                vec!["printf".to_string(), "a b".to_string()],
                vec![
                    "switchboard".into(),
                    "connect".into(),
                    "--frame".into(),
                    "line".into()
                ]
            ]
        );
    }
}
