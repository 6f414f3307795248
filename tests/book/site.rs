//! The book as mdBook builds it, in English and in Chinese: every internal link lands on a
//! page and an anchor that exist, and the Chinese catalogue keeps up with the course.

use crate::common::scratch;
use crate::page::book;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether mdbook is here; fatal where the test script installed it.
pub fn mdbook_here() -> bool {
    let here = Command::new("mdbook").arg("--version").output().is_ok();
    if !here && std::env::var_os("SWITCHBOARD_REQUIRE_MDBOOK").is_some() {
        panic!("no mdbook on PATH, and the test script requires one");
    }
    if !here {
        eprintln!("no mdbook on PATH: the book was not built");
    }
    here
}

/// `mdbook build` of the book into a scratch directory, which it returns: English at its
/// root, Chinese (`po/zh-CN.po`) under `zh-CN/`, as the test script builds it.
pub fn build() -> PathBuf {
    let out = scratch("book-build");
    for (language, dir) in [("en", out.clone()), ("zh-CN", out.join("zh-CN"))] {
        let run = Command::new("mdbook")
            .arg("build")
            .arg(book())
            .arg("-d")
            .arg(&dir)
            .env("MDBOOK_BOOK__LANGUAGE", language)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "mdbook build ({language}) failed:\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    out
}

/// The catalogue template of the book's text, as mdbook-xgettext extracts it.
pub fn template() -> String {
    let out = scratch("book-pot");
    let run = Command::new("mdbook")
        .arg("build")
        .arg(book())
        .arg("-d")
        .arg(&out)
        .env("MDBOOK_OUTPUT", r#"{"xgettext": {}}"#)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "mdbook-xgettext failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(out.join("messages.pot")).unwrap()
}

/// Every relative `href` and `src` of every page under `site` that names no file there, or an
/// anchor its page does not have.
pub fn broken_links(site: &Path) -> Vec<String> {
    let pages = html_files(site);
    let mut ids: HashMap<PathBuf, HashSet<String>> = HashMap::new();
    for page in &pages {
        let html = std::fs::read_to_string(page).unwrap();
        ids.insert(page.clone(), attributes(&html, "id").into_iter().collect());
    }
    let mut broken = Vec::new();
    for page in &pages {
        let html = std::fs::read_to_string(page).unwrap();
        let links = attributes(&html, "href")
            .into_iter()
            .chain(attributes(&html, "src"));
        for link in links {
            if link.contains(':') || link.starts_with("//") {
                continue; // another scheme: outside the book
            }
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let path = path.split('?').next().unwrap();
            let target = if path.is_empty() {
                page.clone()
            } else {
                normalize(&page.parent().unwrap().join(path))
            };
            let shown = page.strip_prefix(site).unwrap().display();
            if !target.exists() {
                broken.push(format!("{shown}: {link} (no such file)"));
            } else if !anchor.is_empty()
                && ids.get(&target).is_some_and(|ids| !ids.contains(anchor))
            {
                broken.push(format!("{shown}: {link} (no such anchor)"));
            }
        }
    }
    broken
}

fn html_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(html_files(&path));
        } else if path.extension().is_some_and(|e| e == "html") {
            out.push(path);
        }
    }
    out
}

/// The values of `name="..."` attributes in an HTML text.
fn attributes(html: &str, name: &str) -> Vec<String> {
    let needle = format!(" {name}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| unescape_html(&rest[..end]))
        })
        .collect()
}

fn unescape_html(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
}

/// A path with its `.` and `..` taken out, without asking the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A gettext catalogue's entries: each message with its translation (empty if none), the
/// places it comes from, and whether it is marked fuzzy (a translation of an older text).
pub struct Entry {
    pub id: String,
    pub translation: String,
    pub places: Vec<String>,
    pub fuzzy: bool,
}

/// Reads a `.po` or `.pot` file's entries (the header, whose id is empty, left out).
pub fn catalogue(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for chunk in text.split("\n\n") {
        let mut entry = Entry {
            id: String::new(),
            translation: String::new(),
            places: Vec::new(),
            fuzzy: false,
        };
        // Which string a continuation line (`"..."`) adds to: the id or the translation.
        let mut in_translation = false;
        for line in chunk.lines() {
            if let Some(places) = line.strip_prefix("#:") {
                entry
                    .places
                    .extend(places.split_whitespace().map(str::to_string));
            } else if line.starts_with("#,") && line.contains("fuzzy") {
                entry.fuzzy = true;
            } else if let Some(rest) = line.strip_prefix("msgid ") {
                entry.id = unquote(rest);
            } else if let Some(rest) = line.strip_prefix("msgstr ") {
                entry.translation = unquote(rest);
                in_translation = true;
            } else if line.starts_with('"') && in_translation {
                entry.translation.push_str(&unquote(line));
            } else if line.starts_with('"') {
                entry.id.push_str(&unquote(line));
            }
        }
        if !entry.id.is_empty() {
            entries.push(entry);
        }
    }
    entries
}

/// A quoted gettext string's text.
fn unquote(quoted: &str) -> String {
    let inner = quoted.trim().trim_start_matches('"').trim_end_matches('"');
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}
