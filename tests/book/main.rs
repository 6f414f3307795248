//! The book (`docs/book/`) and the README, tested as a reader would use them: every command
//! they show runs, and prints what the page shows (`console` blocks) or names only commands
//! and options that exist (`sh` blocks); the book builds in English and Chinese, has no
//! broken link, renders in a real browser, and its Chinese course keeps up with the English;
//! the README stays short.

#[path = "../common/mod.rs"]
mod common;
mod page;
mod run;
mod shell;
mod site;

use page::{book_pages, root};
use std::collections::HashMap;
use std::path::PathBuf;

/// The course's chapters, in the plan's order, one test each (they run side by side: each
/// lesson works on ports of its own).
macro_rules! chapters {
    ($($test:ident => $page:literal),* $(,)?) => {
        const CHAPTERS: &[&str] = &[$($page),*];
        $(
            #[test]
            fn $test() {
                let failures = run::run_page(&book().join("src/course").join($page));
                assert!(failures.is_empty(), "{}", failures.join("\n\n"));
            }
        )*
    };
}

chapters! {
    course_phone => "phone.md",
    course_layers => "layers.md",
    course_calls => "calls.md",
    course_sendall => "sendall.md",
    course_glue => "glue.md",
    course_loops => "loops.md",
    course_backlog => "backlog.md",
    course_one_at_a_time => "one-at-a-time.md",
    course_io_models => "io-models.md",
    course_c10k => "c10k.md",
    course_socketserver => "socketserver.md",
    course_data => "data.md",
}

fn book() -> PathBuf {
    page::book()
}

fn readme() -> PathBuf {
    root().join("README.md")
}

/// The pages that are not a course chapter, the README first. Run one after another: their
/// servers use the ports the pages name.
fn other_pages() -> Vec<PathBuf> {
    let course = book().join("src/course");
    let mut pages = vec![readme()];
    pages.extend(
        book_pages()
            .into_iter()
            .filter(|p| !(p.parent() == Some(&course) && CHAPTERS.iter().any(|c| p.ends_with(c)))),
    );
    pages
}

#[test]
fn every_other_page_runs_as_shown() {
    let failures: Vec<String> = other_pages()
        .iter()
        .flat_map(|p| run::run_page(p))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_chapter_of_the_course_has_its_test() {
    let course = book().join("src/course");
    let summary = std::fs::read_to_string(book().join("src/SUMMARY.md")).unwrap();
    for chapter in CHAPTERS {
        assert!(course.join(chapter).is_file(), "no course/{chapter}");
        assert!(
            summary.contains(&format!("(course/{chapter})")),
            "{chapter} not in SUMMARY.md"
        );
    }
    // The lessons `switchboard lesson` lists, each with a chapter.
    let list = std::process::Command::new(common::bin())
        .arg("lesson")
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    let lessons: Vec<&str> = list
        .lines()
        .filter_map(|l| l.trim_start().split_once(". ")?.1.split_whitespace().next())
        .collect();
    assert_eq!(lessons.len(), CHAPTERS.len(), "{list}");
    for (lesson, chapter) in lessons.iter().zip(CHAPTERS) {
        assert_eq!(
            format!("{lesson}.md"),
            *chapter,
            "the course is not in the lessons' order"
        );
    }
}

#[test]
fn every_shell_command_names_what_exists() {
    let mut helps = HashMap::new();
    let mut failures = Vec::new();
    let mut pages = vec![readme(), book().join("README.md")];
    pages.extend(book_pages());
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(root()).unwrap().display().to_string();
        failures.extend(shell::check_page(&name, &text, &mut helps));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pages_show_commands_only_in_blocks_the_test_knows() {
    // A `bash` or `shell` block would be neither run nor checked.
    let mut pages = vec![readme()];
    pages.extend(book_pages());
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        for block in page::blocks(&text) {
            let known = [
                "console",
                "sh",
                "text",
                "sql",
                "toml",
                "rust",
                "rust,no_run",
                "python",
                "",
            ];
            assert!(
                known.contains(&block.info.as_str()),
                "{}:{}: a `{}` block: use `console` (run, output compared) or `sh` (checked)",
                page.display(),
                block.line,
                block.info
            );
        }
    }
}

#[test]
fn the_readme_is_read_in_five_minutes() {
    let text = std::fs::read_to_string(readme()).unwrap();
    let lines = text.lines().count();
    assert!(
        lines <= 250,
        "the README has {lines} lines: move what the book says better into it"
    );
    // Its links lead somewhere in the repository.
    for (at, _) in text.match_indices("](") {
        let target = &text[at + 2..];
        let target = &target[..target.find(')').unwrap()];
        if target.contains("://") || target.starts_with('#') {
            continue;
        }
        let path = target.split('#').next().unwrap();
        assert!(
            root().join(path).exists(),
            "the README links to {target}, which is not there"
        );
    }
}

#[test]
fn the_book_builds_in_both_languages_without_a_broken_link() {
    if !site::mdbook_here() {
        return;
    }
    let out = site::build();
    assert!(out.join("index.html").is_file() && out.join("zh-CN/index.html").is_file());
    let broken = site::broken_links(&out);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    // Every chapter of the Chinese course is in Chinese: far more of its text than the
    // English chapter's quotes of the plan.
    for chapter in CHAPTERS {
        let page = chapter.replace(".md", ".html");
        let read = |dir: &str| std::fs::read_to_string(out.join(dir).join(&page)).unwrap();
        let (english, chinese) = (read("course"), read("zh-CN/course"));
        assert!(chinese.contains("lang=\"zh-CN\""), "zh-CN/course/{page}");
        let (en, zh) = (han(&english), han(&chinese));
        assert!(
            zh > 3 * en + 200,
            "zh-CN/course/{page} is not in Chinese ({zh} Han characters, the English {en})"
        );
    }
}

/// How many Han (Chinese) characters a text holds.
fn han(text: &str) -> usize {
    text.chars()
        .filter(|c| ('\u{4e00}'..='\u{9fff}').contains(c))
        .count()
}

#[test]
fn the_book_opens_in_a_browser() {
    if !site::mdbook_here() {
        return;
    }
    common::assert_renders(&site::build().join("course/phone.html"));
}

#[test]
fn the_chinese_course_keeps_up_with_the_english() {
    if !site::mdbook_here() {
        return;
    }
    let template = site::catalogue(&site::template());
    let po = std::fs::read_to_string(book().join("po/zh-CN.po")).unwrap();
    let translated: HashMap<String, site::Entry> = site::catalogue(&po)
        .into_iter()
        .map(|e| (e.id.clone(), e))
        .collect();
    let mut missing = Vec::new();
    // Code blocks (commands and their output) show as they are: the Chinese page takes them
    // from the English, so a changed output never leaves a stale copy behind.
    for entry in template.iter().filter(|e| {
        e.places.iter().any(|p| p.contains("course/"))
            && !e.id.trim().is_empty()
            && !e.id.starts_with("```")
    }) {
        match translated.get(&entry.id) {
            Some(t) if !t.translation.is_empty() && !t.fuzzy => {}
            Some(_) => missing.push(format!(
                "{}: untranslated or fuzzy: {:?}",
                entry.places[0], entry.id
            )),
            None => missing.push(format!(
                "{}: not in po/zh-CN.po: {:?}",
                entry.places[0], entry.id
            )),
        }
    }
    assert!(
        missing.is_empty(),
        "{} messages of the course have no Chinese (update po/zh-CN.po: see docs/book/README.md):\n{}",
        missing.len(),
        missing.join("\n")
    );
}
