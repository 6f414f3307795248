//! A pid file (`serve --pid-file`): this process's id, written once it serves, removed when it
//! exits cleanly, never written through a link planted at its path.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Holds this process's id at a path while it lives; removed when dropped, if still ours.
#[derive(Debug)]
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes the file anew, atomically: into a file of its own beside it, then renamed over
    /// the path. A rename replaces a symbolic link at the path rather than following it, so a
    /// link planted there cannot make the server (often root) overwrite another file.
    pub fn write(path: &Path) -> io::Result<PidFile> {
        let Some(name) = path.file_name() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the pid file {} names no file", path.display()),
            ));
        };
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp); // one of ours left by a crash; never followed
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&tmp)
            .and_then(|mut f| f.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            let why = format!("cannot write the pid file {}: {e}", path.display());
            return Err(io::Error::new(e.kind(), why));
        }
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: a newer server may have written its pid there since.
        let ours = std::fs::read_to_string(&self.0)
            .is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
