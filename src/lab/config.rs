//! What a lab measures: the servers, the loads, the rounds; and the order it measures them in.

use crate::lab::server::LabServer;
use crate::model::Model;
use std::path::PathBuf;
use std::time::Duration;

/// The plan's own stack, carried as a reference: Python's `socketserver.ThreadingTCPServer`
/// answering with the bytes upper-cased. Run as `python3 -c SOURCE PORT`.
pub const PYTHON_REFERENCE: &str = include_str!("upper_server.py");

/// What to measure: the options of `switchboard lab`.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The servers, in the order of the tables.
    pub servers: Vec<LabServer>,
    /// Connection counts.
    pub conns: Vec<usize>,
    /// Request sizes in bytes.
    pub sizes: Vec<usize>,
    /// Requests in flight per connection.
    pub depths: Vec<usize>,
    /// Measurements per cell; the median is kept.
    pub rounds: usize,
    /// Each measurement's window.
    pub duration: Duration,
    /// Each measurement's warm-up.
    pub warmup: Duration,
    /// Server and load generator on disjoint cores.
    pub pin: bool,
    /// The `switchboard` executable that serves the models.
    pub exe: PathBuf,
    /// Arguments added to every `switchboard serve` (`--no-store`, or a store).
    pub serve_args: Vec<String>,
    /// Open loop: requests per second in all, per cell, spread over its connections (a low
    /// rate over many connections measures connections that are mostly idle). `None`: closed
    /// loop.
    pub rate: Option<f64>,
}

impl LabConfig {
    /// The defaults of `switchboard lab`: every model available here, 1 to 1,000 connections,
    /// 64 bytes, depth 1, 3 rounds of 3 s after 1 s, pinned where there are 2 cores or more.
    pub fn new(exe: PathBuf) -> LabConfig {
        LabConfig {
            servers: Model::ALL
                .iter()
                .filter(|m| m.available().is_ok())
                .map(|&m| LabServer::Model(m))
                .collect(),
            conns: vec![1, 10, 100, 1000],
            sizes: vec![64],
            depths: vec![1],
            rounds: 3,
            duration: Duration::from_secs(3),
            warmup: Duration::from_secs(1),
            pin: cores().len() >= 2,
            exe,
            serve_args: vec!["--no-store".into()],
            rate: None,
        }
    }

    /// Adds, after each model, the same model serving `tls://` with the certificate `cert` and
    /// its key `key`, checked now: a file that cannot be used fails once, not in every cell.
    pub fn add_tls(
        &mut self,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<(), crate::tls::TlsError> {
        crate::tls::server_config(cert, key, None)?;
        self.servers = self
            .servers
            .iter()
            .flat_map(|s| match s {
                LabServer::Model(m) => vec![s.clone(), LabServer::tls(*m, cert, key)],
                _ => vec![s.clone()],
            })
            .collect();
        Ok(())
    }

    /// Adds, after `uring` (added first if missing), `uring` with each of its io_uring features
    /// turned the other way in turn ([`LabServer::uring_without`]): the ablation, what each
    /// feature is worth under the same loads.
    pub fn add_uring_ablation(&mut self) {
        let uring = LabServer::Model(Model::Uring);
        let at = match self.servers.iter().position(|s| *s == uring) {
            Some(i) => i + 1,
            None => {
                self.servers.insert(0, uring);
                1
            }
        };
        let variants = crate::model::UringFeature::ALL.map(LabServer::uring_without);
        self.servers.splice(at..at, variants);
    }

    /// Adds the plan's own stack, Python's `socketserver` ([`PYTHON_REFERENCE`]), as a reference
    /// server, its script written into `dir` beside the results so a reader sees what was
    /// measured.
    pub fn add_python_reference(&mut self, dir: &std::path::Path) -> std::io::Result<()> {
        let script = dir.join("upper_server.py");
        std::fs::write(&script, PYTHON_REFERENCE)?;
        let quoted = script.display().to_string().replace('\'', "'\\''");
        self.servers.push(LabServer::Reference {
            name: "python".into(),
            command: format!("python3 '{quoted}' {{port}}"),
        });
        Ok(())
    }

    /// Gives every connection of the largest cell a place in the served models: past their
    /// `--max-conns` the rest would wait in the backlog, and the cell would measure that.
    pub fn fit_max_conns(&mut self) {
        let most = self.conns.iter().copied().max().unwrap_or(0);
        if most > crate::server::DEFAULT_MAX_CONNS {
            self.serve_args
                .extend(["--max-conns".into(), most.to_string()]);
        }
    }

    /// The cores for the server and for the load generator: halves of the cores this process
    /// may use when pinning (the server gets the larger), else none.
    pub fn cores(&self) -> (Option<Vec<usize>>, Option<Vec<usize>>) {
        let all = cores();
        if !self.pin || all.len() < 2 {
            return (None, None);
        }
        let split = all.len().div_ceil(2);
        (Some(all[..split].to_vec()), Some(all[split..].to_vec()))
    }

    /// Every cell, and how they are grouped to be interleaved: the cells of one group (same
    /// load) are measured round by round, one server after the other.
    pub(super) fn groups(&self) -> Vec<Vec<CellKey>> {
        let mut seen = Vec::new();
        let mut groups = Vec::new();
        for &size in &self.sizes {
            for &depth in &self.depths {
                for &conns in &self.conns {
                    let mut group = Vec::new();
                    for server in &self.servers {
                        // `iterative` serves one client at a time: it gets one connection.
                        let conns = if server.model() == Some(Model::Iterative) {
                            1
                        } else {
                            conns
                        };
                        let key = CellKey {
                            server: server.clone(),
                            conns,
                            size,
                            depth,
                        };
                        if !seen.contains(&key) {
                            seen.push(key.clone());
                            group.push(key);
                        }
                    }
                    if !group.is_empty() {
                        groups.push(group);
                    }
                }
            }
        }
        groups
    }

    /// How many measurements the whole matrix takes.
    pub fn measurements(&self) -> usize {
        self.groups().iter().map(Vec::len).sum::<usize>() * self.rounds
    }
}

/// The cores this process may run on.
pub(super) fn cores() -> Vec<usize> {
    crate::sys::allowed_cpus().unwrap_or_default()
}

/// One cell of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CellKey {
    pub(super) server: LabServer,
    pub(super) conns: usize,
    pub(super) size: usize,
    pub(super) depth: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterative_is_measured_once_with_one_connection_and_models_interleave() {
        let mut c = LabConfig::new(PathBuf::from("switchboard"));
        c.servers = vec![
            LabServer::Model(Model::Iterative),
            LabServer::Model(Model::Epoll),
        ];
        c.conns = vec![10, 100];
        let groups = c.groups();
        let shape: Vec<Vec<(&str, usize)>> = groups
            .iter()
            .map(|g| g.iter().map(|k| (k.server.name(), k.conns)).collect())
            .collect();
        assert_eq!(
            shape,
            vec![vec![("iterative", 1), ("epoll", 10)], vec![("epoll", 100)]]
        );
        assert_eq!(c.measurements(), 3 * 3);
    }
}
