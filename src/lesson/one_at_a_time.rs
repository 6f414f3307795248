//! One client at a time: the plan's server (`iterative`) keeps a second client waiting for as
//! long as the first stays connected; `threads` and `fork` serve both at once.

use super::{Class, Lesson, LessonError, Taught};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub(super) const LESSON: Lesson = Lesson {
    name: "one-at-a-time",
    title: "concurrency: one client at a time, then many",
    summary: "the iterative server keeps a second client waiting while the first is connected; threads and fork serve both",
    run,
};

/// How long the first client stays connected, idle, before it hangs up.
const HOLD: Duration = Duration::from_millis(600);

fn run(c: &mut Class) -> Result<Taught, LessonError> {
    let mut waits = Vec::new();
    for model in ["iterative", "threads", "fork"] {
        c.check()?;
        let served = c.serve("tcp://127.0.0.1:0", &["--model", model, "--no-store"])?;
        let waited = second_client_wait(served.sockaddr())?;
        drop(served);
        let ms = waited.as_millis() as u64;
        c.say(format!(
            "{model}: client 1 connects and stays {} ms; client 2's request is answered after {ms} ms",
            HOLD.as_millis()
        ));
        c.figure(&format!("{model}_second_client_waited_ms"), ms);
        waits.push((model, waited));
    }
    let iterative = waits[0].1;
    if iterative < HOLD / 2 || waits[1..].iter().any(|(_, w)| *w >= HOLD / 2) {
        return Err(LessonError::Unexpected(format!("waits {waits:?}")));
    }
    Ok(Taught {
        shows: format!(
            "The plan's server answers one client at a time: while the first stayed connected, the \
             second's request sat unanswered ({} ms), though the kernel had already accepted its \
             connection into the backlog. A thread (or a process) per connection serves both at \
             once: the second was answered at once under threads and fork.",
            iterative.as_millis()
        ),
        code: vec![
            "src/model/iterative.rs",
            "src/model/threads.rs",
            "src/model/fork.rs",
        ],
    })
}

/// With a first client connected and idle for [`HOLD`], how long a second client's request
/// takes to be answered.
fn second_client_wait(addr: SocketAddr) -> std::io::Result<Duration> {
    let mut first = TcpStream::connect(addr)?;
    first.write_all(b"first")?;
    let mut buf = [0u8; 5];
    first.read_exact(&mut buf)?; // being served now
    let hold = std::thread::spawn(move || {
        std::thread::sleep(HOLD);
        drop(first);
    });
    let began = Instant::now();
    let mut second = TcpStream::connect(addr)?;
    second.set_read_timeout(Some(Duration::from_secs(10)))?;
    second.write_all(b"other")?;
    second.read_exact(&mut buf)?;
    let waited = began.elapsed();
    let _ = hold.join();
    Ok(waited)
}
