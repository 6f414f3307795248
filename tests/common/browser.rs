//! A real headless Chromium: a page rendered into a screenshot, and how much of it is ink.

use super::scratch;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Chromium from Debian's packages (the test script installs it), or none.
pub fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|dir| Path::new(dir).join(name))
                .find(|p| p.is_file())
        })
}

/// Renders `page` headless into a PNG screenshot, within the patience.
pub fn screenshot(browser: &Path, page: &Path, png: &Path) {
    let profile = scratch("chromium-profile");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1200,1800",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish its screenshot in 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(png.is_file(), "chromium wrote no screenshot");
}

/// The share of a PNG's pixels that are not the page's white background.
pub fn inked_share(png: &Path) -> f64 {
    let decoder = png::Decoder::new(std::fs::File::open(png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let inked = pixels
        .chunks(channels)
        .filter(|p| p.iter().take(3).any(|&c| c < 200))
        .count();
    inked as f64 / (pixels.len() / channels) as f64
}

/// Renders `page` in headless Chromium and checks the screenshot is not blank (more than 2%
/// of it ink). Without Chromium it says so and checks nothing, unless the test script
/// installed one (`SWITCHBOARD_REQUIRE_CHROMIUM`), where its absence fails the test.
pub fn assert_renders(page: &Path) {
    match chromium() {
        Some(browser) => {
            let png = scratch("screenshot").join("page.png");
            screenshot(&browser, page, &png);
            let share = inked_share(&png);
            assert!(
                share > 0.02,
                "{} rendered blank ({share:.4} inked)",
                page.display()
            );
        }
        None if std::env::var_os("SWITCHBOARD_REQUIRE_CHROMIUM").is_some() => {
            panic!("no chromium on PATH, and the test script requires one")
        }
        None => eprintln!("no chromium on PATH: {} was not rendered", page.display()),
    }
}
