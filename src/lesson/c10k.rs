//! C10K: what a connection costs a thread-per-connection server and an event loop, from 10 to
//! 10,000 connections: memory per connection and CPU per reply.

use super::{measure, Class, Lesson, LessonError, Taught};
use crate::lab::LabServer;
use crate::model::Model;
use std::time::Duration;

pub(super) const LESSON: Lesson = Lesson {
    name: "c10k",
    title: "concurrency: ten thousand connections (C10K)",
    summary: "memory and CPU per connection from 10 to 10,000 connections: a thread per connection against an event loop",
    run,
};

fn run(c: &mut Class) -> Result<Taught, LessonError> {
    let servers = vec![
        LabServer::Model(Model::Threads),
        LabServer::Model(Model::Epoll),
    ];
    let cells = measure(c, servers, vec![10, 1000, 10_000], Duration::from_secs(1))?;
    for cell in &cells {
        let mem = cell
            .rss_bytes_per_conn
            .map_or("too little to tell".to_string(), |b| {
                format!("{:.1} KiB", b / 1024.0)
            });
        c.say(format!(
            "{} at {} connections: {:.0} replies/s, {} of memory per connection, {} µs of CPU per reply",
            cell.model,
            cell.conns,
            cell.msgs_per_s,
            mem,
            cell.cpu_us_per_msg.map_or("-".into(), |v| format!("{v:.2}"))
        ));
        c.cell_figures(cell);
    }
    Ok(Taught {
        shows: "A thread per connection pays for each client with a stack and a scheduler entry, \
                and for each reply with a context switch: at ten thousand connections that is \
                ten thousand threads. An event loop holds a connection in about a kilobyte of \
                buffers and serves them all from one thread. That is the C10K problem, and why \
                servers moved to epoll and io_uring."
            .into(),
        code: vec![
            "src/model/threads.rs",
            "src/model/epoll.rs",
            "src/model/reactor.rs",
        ],
    })
}
