//! Files the server itself read at startup (the `--ws-token-file`, the `--config` file) and
//! that no confined process and no filesystem call may see or change: with the token, a process
//! that reaches the server's port could start a process under a wider policy.
//!
//! The server keeps each file open. The kernel keeps the name of an open file up to date
//! through renames (`/proc/self/fd/N`), so a file is hidden where it is *now*, not where it
//! was when the server started: a process that renames a directory above it cannot make the
//! next spawn hide a decoy while the real file sits unhidden under its new name.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The files to hide, each held open by the server.
#[derive(Debug, Clone, Default)]
pub struct ServerFiles {
    files: Vec<(PathBuf, Arc<File>)>,
}

/// One server file as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// A regular file at this path (absolute, in the server's mount namespace).
    At(PathBuf),
    /// Nothing on disk holds the content any more (deleted, or a pipe whose content was
    /// consumed at startup): nothing to hide.
    Gone,
}

impl ServerFiles {
    /// Opens `path`, reads it whole and keeps it open for hiding. Returns the content.
    pub fn read(&mut self, path: &Path) -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        self.files.push((path.to_path_buf(), Arc::new(file)));
        Ok(text)
    }

    /// True when there is nothing to hide.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Where each file is now. An error names a file that cannot be located exactly (its
    /// hiding cannot be guaranteed: the caller fails closed).
    pub fn current(&self) -> Result<Vec<Current>, String> {
        self.files
            .iter()
            .map(|(given, file)| current(given, file))
            .collect()
    }
}

fn current(given: &Path, file: &File) -> Result<Current, String> {
    let meta = file.metadata().map_err(|e| {
        format!(
            "the server file {} cannot be examined: {e}",
            given.display()
        )
    })?;
    if !meta.file_type().is_file() || meta.nlink() == 0 {
        return Ok(Current::Gone);
    }
    if meta.nlink() > 1 {
        return Err(format!(
            "hiding the server file {} (it has {} hard links, and stockade can only hide the name it knows; remove the other links)",
            given.display(),
            meta.nlink()
        ));
    }
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    let now = std::fs::read_link(&link).map_err(|e| {
        format!(
            "hiding the server file {} (cannot read {link}: {e}; /proc must be mounted)",
            given.display()
        )
    })?;
    if !now.is_absolute() {
        return Err(format!(
            "hiding the server file {} (it is now at {}, outside this server's root)",
            given.display(),
            now.display()
        ));
    }
    Ok(Current::At(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_followed_through_renames_and_deletion() {
        let dir = std::env::temp_dir().join(format!("stockade-sf-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        let dir = dir.canonicalize().unwrap();
        std::fs::write(dir.join("a/token"), "t0ken\n").unwrap();
        let mut files = ServerFiles::default();
        assert!(files.is_empty());
        assert_eq!(files.read(&dir.join("a/token")).unwrap(), "t0ken\n");
        assert_eq!(
            files.current().unwrap(),
            vec![Current::At(dir.join("a/token"))]
        );
        // A renamed ancestor: the file is found under its new name.
        std::fs::rename(dir.join("a"), dir.join("b")).unwrap();
        assert_eq!(
            files.current().unwrap(),
            vec![Current::At(dir.join("b/token"))]
        );
        // A second name cannot be hidden: fail closed.
        std::fs::hard_link(dir.join("b/token"), dir.join("copy")).unwrap();
        let e = files.current().unwrap_err();
        assert!(e.contains("2 hard links"), "{e}");
        std::fs::remove_file(dir.join("copy")).unwrap();
        // Deleted: nothing left on disk to hide.
        std::fs::remove_file(dir.join("b/token")).unwrap();
        assert_eq!(files.current().unwrap(), vec![Current::Gone]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
