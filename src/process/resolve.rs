//! Looking up `argv[0]` in the child's `PATH`, in the parent (the child cannot allocate).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The search path used when the child's environment has no `PATH` (glibc's default).
pub const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Resolves `program` as `execvp` would, against `path_var` (the child's `PATH`) and `cwd`
/// (for relative entries and names containing a slash).
pub fn resolve_program(program: &str, path_var: Option<&str>, cwd: &Path) -> io::Result<PathBuf> {
    if program.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if program.contains('/') {
        return Ok(cwd.join(program));
    }
    let mut denied = false;
    for dir in path_var.unwrap_or(DEFAULT_PATH).split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = cwd.join(dir).join(program);
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() => {
                if m.permissions().mode() & 0o111 != 0 {
                    return Ok(candidate);
                }
                denied = true;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => denied = true,
            Err(_) => {}
        }
    }
    Err(io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_in_path_and_reports_missing() {
        let p = resolve_program("sh", Some("/nonexistent:/bin"), Path::new("/")).unwrap();
        assert_eq!(p, PathBuf::from("/bin/sh"));
        let e = resolve_program("no-such-prog-xyz", Some("/bin"), Path::new("/")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(
            resolve_program("./x", None, Path::new("/tmp")).unwrap(),
            PathBuf::from("/tmp/./x")
        );
    }
}
