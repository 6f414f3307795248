//! socketserver: the plan's Python `socketserver` servers (`ThreadingTCPServer`,
//! `ForkingTCPServer`) beside the models that copy their mix-ins (`threads`, `fork`), on the
//! same load.

use super::{measure, Class, Lesson, LessonError, Taught};
use crate::lab::LabServer;
use crate::model::Model;
use std::time::Duration;

pub(super) const LESSON: Lesson = Lesson {
    name: "socketserver",
    title: "concurrency: Python's socketserver and its copies",
    summary: "the plan's socketserver (ThreadingTCPServer, ForkingTCPServer) beside the threads and fork models on one load (needs python3)",
    run,
};

fn run(c: &mut Class) -> Result<Taught, LessonError> {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err(LessonError::Needs(
            "this lesson runs the plan's Python server: install python3".into(),
        ));
    }
    let script = c.dir().join("upper_server.py");
    std::fs::write(&script, crate::lab::PYTHON_REFERENCE)?;
    let python = |name: &str, mode: &str| LabServer::Reference {
        name: name.into(),
        command: format!("python3 {} {{port}} {mode}", script.display()),
    };
    let servers = vec![
        python("ThreadingTCPServer", ""),
        LabServer::Model(Model::Threads),
        python("ForkingTCPServer", "fork"),
        LabServer::Model(Model::Fork),
    ];
    let cells = measure(c, servers, vec![10, 100], Duration::from_secs(2))?;
    for cell in &cells {
        c.say(format!(
            "{} at {} connections: {:.0} replies/s, p99 {} µs, {} µs of CPU per reply",
            cell.model,
            cell.conns,
            cell.msgs_per_s,
            cell.p99_us,
            cell.cpu_us_per_msg
                .map_or("-".into(), |v| format!("{v:.2}"))
        ));
        c.cell_figures(cell);
    }
    Ok(Taught {
        shows: "socketserver is the plan's shape: one handler, and a mix-in that says how clients \
                are served at once, a thread (ThreadingMixIn) or a process (ForkingMixIn) each. \
                switchboard's threads and fork models are those mix-ins, and the same handler \
                (the upper-casing service) runs under any model; the Python interpreter's cost \
                per reply shows in its CPU column."
            .into(),
        code: vec![
            "src/model/threads.rs (ThreadingMixIn)",
            "src/model/fork.rs (ForkingMixIn)",
            "src/lab/upper_server.py (the plan's server)",
        ],
    })
}
