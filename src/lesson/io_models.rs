//! The IO models side by side: blocking, non-blocking, multiplexing, signal-driven and
//! asynchronous IO serving the same load for a few seconds each, with what each spends per
//! reply: CPU, system calls and context switches (counted by the kernel's perf events).

use super::{measure, Class, Lesson, LessonError, Taught};
use crate::lab::LabServer;
use crate::model::Model;
use std::time::Duration;

pub(super) const LESSON: Lesson = Lesson {
    name: "io-models",
    title: "concurrency: the five IO models",
    summary: "blocking, non-blocking, multiplexing, signal-driven and asynchronous IO on one load: replies/s, CPU, system calls and context switches per reply",
    run,
};

/// The plan's five IO models, each by the model that teaches it.
const MODELS: [(&str, Model); 5] = [
    ("blocking", Model::Threads),
    ("non-blocking", Model::Nonblocking),
    ("multiplexing", Model::Epoll),
    ("signal-driven", Model::Sigio),
    ("asynchronous", Model::Uring),
];

fn run(c: &mut Class) -> Result<Taught, LessonError> {
    let servers = MODELS
        .iter()
        .filter(|(_, m)| m.available().is_ok())
        .map(|(_, m)| LabServer::Model(*m))
        .collect();
    let cells = measure(c, servers, vec![50], Duration::from_secs(2))?;
    let mut counted = true;
    for cell in &cells {
        let class = MODELS
            .iter()
            .find(|(_, m)| m.name() == cell.model)
            .map_or("", |(class, _)| class);
        let per = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        counted &= cell.syscalls_per_msg.is_some();
        c.say(format!(
            "{class} ({}): {:.0} replies/s; per reply {} µs of CPU, {} system calls, {} context switches",
            cell.model,
            cell.msgs_per_s,
            per(cell.cpu_us_per_msg),
            per(cell.syscalls_per_msg),
            per(cell.switches_per_msg)
        ));
        c.cell_figures(cell);
    }
    if !counted {
        c.say("(system calls and context switches are counted by the kernel's perf events, which need root: sudo switchboard lesson io-models)");
    }
    Ok(Taught {
        shows: "Every model moves the same bytes; what differs is how it learns a socket is ready \
                and what that costs. Blocking IO parks a thread per client, so each reply is a \
                context switch; non-blocking IO never waits but asks every socket; multiplexing \
                asks the kernel once for all ready sockets; signal-driven IO is told by a signal \
                per event, each taken by a system call of its own; asynchronous IO (io_uring) \
                hands the kernel the reads and writes themselves, in batches, and spends the \
                fewest system calls per reply. The lab measures the same columns for every model."
            .into(),
        code: vec![
            "src/model/ (one file per model)",
            "src/sys/perf.rs (counting system calls and context switches)",
            "src/lab/run.rs (the lab's syscalls/msg and switches/msg)",
        ],
    })
}
