//! Policy-confirmed error texts: the evidence for refusals no kernel source reports (a write
//! under a read-only carve-out fails with EROFS before any LSM hook, a hidden file is a
//! mode-000 stand-in refused by ordinary permissions) and the fallback for filesystem refusals
//! wherever Landlock audit records cannot be read.
//!
//! A line of stderr (or of the terminal) that carries an error text the sandbox causes
//! (`Permission denied`, `Operation not permitted`, `Read-only file system`) and names a path
//! counts only when this process's policy, carve-outs and hidden paths included, denies that
//! access to that path, and ordinary permissions would not have refused it anyway. A program
//! that does not print its error, or prints no path, is missed; a path printed relative to a
//! directory the program changed into is resolved against the process's starting directory.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::fs_denial;
use crate::protocol::process::{Denial, DenialSource};
use crate::sandbox::policy::{Access, FsEntry, normalize, resolve};

/// Lines with an error text examined per process; later ones are not (the list says it may be
/// incomplete), so that a process printing errors in a loop costs the server little.
const MAX_LINES: u32 = 512;

/// Longest line kept while waiting for its end; the rest of a longer line is dropped.
const MAX_LINE: usize = 4096;

/// The error texts, and whether the errno is EROFS (a write, whatever the program did).
const MARKERS: [(&str, bool); 4] = [
    ("Permission denied", false),
    ("permission denied", false),
    ("Operation not permitted", false),
    ("Read-only file system", true),
];

/// Words that make a line's failed access a write.
const WRITE_WORDS: [&str; 16] = [
    "create",
    "write",
    "writing",
    "touch",
    "remove",
    "delete",
    "mkdir",
    "make",
    "rename",
    "move",
    "lock",
    "unlink",
    "truncate",
    "overwrite",
    "changing",
    "save",
];

/// Words that make it a read.
const READ_WORDS: [&str; 6] = [
    "read",
    "cannot open",
    "access",
    "stat",
    "list",
    "directory '",
];

/// Reads error texts of one process and confirms them against its policy.
#[derive(Debug)]
pub struct StderrEvidence {
    cwd: PathBuf,
    /// The policy's entries, their paths resolved as the kernel resolved them.
    entries: Vec<FsEntry>,
    /// Read-only carve-outs and protected links (mounts): writing is refused.
    read_only: Vec<PathBuf>,
    /// Hidden paths (mode-000 stand-ins): everything is refused.
    hidden: Vec<PathBuf>,
    uid: u32,
    gids: Vec<u32>,
    partial: Vec<u8>,
    lines_left: u32,
}

impl StderrEvidence {
    /// For a process with a restricted filesystem: `entries` are its policy's, `mounts` its
    /// mount plan (kind byte + path, see `prepare::carve_outs`), `cwd` where it starts.
    pub fn new(entries: &[FsEntry], mounts: &[Vec<u8>], cwd: &Path) -> StderrEvidence {
        let (mut read_only, mut hidden) = (Vec::new(), Vec::new());
        for m in mounts {
            let Some((kind, path)) = m.split_first() else {
                continue;
            };
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(path));
            match kind {
                // Read-only carve-outs, protected hard links, pinned symlinks.
                0 | 3 | 4 => read_only.push(path),
                1 | 2 => hidden.push(path),
                // The read-only view outside the writable roots and the writable roots
                // themselves: the entries say the same.
                _ => {}
            }
        }
        let entries = entries
            .iter()
            .map(|e| FsEntry {
                path: crate::paths::canonical_or_lexical(&e.path),
                ..e.clone()
            })
            .collect();
        // SAFETY: geteuid/getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut gids = nix::unistd::getgroups()
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect::<Vec<_>>())
            .unwrap_or_default();
        gids.push(gid);
        StderrEvidence {
            cwd: cwd.to_path_buf(),
            entries,
            read_only,
            hidden,
            uid,
            gids,
            partial: Vec::new(),
            lines_left: MAX_LINES,
        }
    }

    /// Feeds output; returns the confirmed refusals of the complete lines, and whether lines
    /// were skipped because the budget ran out.
    pub fn feed(&mut self, data: &[u8]) -> (Vec<Denial>, bool) {
        let mut found = Vec::new();
        let mut skipped = false;
        let mut rest = data;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let room = MAX_LINE.saturating_sub(self.partial.len());
            self.partial.extend_from_slice(&rest[..end.min(room)]);
            rest = &rest[end + 1..];
            let line = std::mem::take(&mut self.partial);
            skipped |= self.line(&line, &mut found);
        }
        let room = MAX_LINE.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&rest[..rest.len().min(room)]);
        (found, skipped)
    }

    /// Checks one line; true when it had to be skipped (budget spent).
    fn line(&mut self, line: &[u8], found: &mut Vec<Denial>) -> bool {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        let Some(&(_, erofs)) = MARKERS.iter().find(|(m, _)| text.contains(m)) else {
            return false;
        };
        if self.lines_left == 0 {
            return true;
        }
        self.lines_left -= 1;
        let lower = text.to_lowercase();
        let writes = erofs || WRITE_WORDS.iter().any(|w| lower.contains(w));
        let reads = !writes && READ_WORDS.iter().any(|w| lower.contains(w));
        for candidate in candidates(text) {
            let path = normalize(&self.cwd.join(&candidate));
            if let Some(access) = self.confirm(&path, erofs, writes, reads) {
                found.push(fs_denial(
                    access,
                    path.to_string_lossy().into_owned(),
                    DenialSource::Stderr,
                ));
                break;
            }
        }
        false
    }

    /// The access the policy refused at `path`, if the line's error can be the sandbox's.
    fn confirm(&self, path: &Path, erofs: bool, writes: bool, reads: bool) -> Option<&'static str> {
        let real = crate::paths::canonical_or_lexical(path);
        let under = |list: &[PathBuf]| list.iter().any(|p| real.starts_with(p));
        let access = resolve(&self.entries, &real);
        // Hidden: whatever the program tried was refused by the sandbox (the stand-in's mode
        // 000 is the policy's, not the file's).
        if access == Access::None || under(&self.hidden) {
            return Some(if writes { "write" } else { "read" });
        }
        let write_denied = access != Access::Write || under(&self.read_only);
        if !write_denied || reads {
            return None;
        }
        // EROFS is never ordinary permissions. EACCES/EPERM on a write: only when the file's
        // own permissions would have allowed it (else the refusal is the file's, not the
        // sandbox's alone); when the line does not say it was a write, also only when they
        // would have allowed reading (else it may have been a read the file refused).
        (erofs || (self.dac_allows(&real, true) && (writes || self.dac_allows(&real, false))))
            .then_some("write")
    }

    /// Whether ordinary permissions let this process (the server's uid and groups, without
    /// capabilities) write (or read) `path`; a path that does not exist: create it.
    fn dac_allows(&self, path: &Path, write: bool) -> bool {
        let (target, need) = match std::fs::symlink_metadata(path) {
            Ok(m) => (m, if write { 0o2 } else { 0o4 }),
            Err(_) => match path.parent().map(std::fs::metadata) {
                Some(Ok(m)) => (m, 0o3),
                _ => return false,
            },
        };
        let mode = target.mode();
        let bits = if target.uid() == self.uid {
            mode >> 6
        } else if self.gids.contains(&target.gid()) {
            mode >> 3
        } else {
            mode
        } & 0o7;
        bits & need == need
    }
}

/// The path-like words of an error line: quoted strings, `: `-separated fields without spaces
/// (not the program name, not a number), the last word of a field when it looks like a path
/// (`cannot create dir/file`), and words starting with `/`. The error texts themselves are
/// removed first, so that none of their words is taken for a file.
fn candidates(line: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut stripped = line.to_string();
    for (m, _) in MARKERS {
        stripped = stripped.replace(m, "");
    }
    let line = stripped.as_str();
    let mut push = |s: &str| {
        let s = s.trim_matches(|c: char| {
            matches!(c, ':' | ',' | '\'' | '"' | '‘' | '’' | '`') || c.is_whitespace()
        });
        if !s.is_empty() && !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    };
    for (open, close) in [('\'', '\''), ('"', '"'), ('‘', '’'), ('`', '\'')] {
        let mut rest = line;
        while let Some(i) = rest.find(open) {
            let after = &rest[i + open.len_utf8()..];
            let Some(j) = after.find(close) else { break };
            push(&after[..j]);
            rest = &after[j + close.len_utf8()..];
        }
    }
    for field in line.split(": ").skip(1) {
        let field = field.trim();
        if !field.is_empty() && !field.contains(' ') && !field.chars().all(|c| c.is_ascii_digit()) {
            push(field);
        } else if let Some(last) = field.split_whitespace().last()
            && (last.contains('/') || last.contains('.'))
            && !last.starts_with('[')
        {
            push(last);
        }
    }
    for word in line.split_whitespace() {
        if word.starts_with('/') {
            push(word.trim_matches(|c| c == '\'' || c == '"' || c == '‘' || c == '’'));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_found_in_common_error_texts() {
        let c = |l: &str| candidates(l);
        assert!(c("sh: 1: cannot create /etc/x: Read-only file system").contains(&"/etc/x".into()));
        assert!(c("bash: line 1: out.txt: Permission denied").contains(&"out.txt".into()));
        assert!(c("touch: cannot touch '/a b/c': Permission denied").contains(&"/a b/c".into()));
        assert!(
            c("mkdir: cannot create directory ‘/x/y’: Read-only file system")
                .contains(&"/x/y".into())
        );
        assert!(
            c("PermissionError: [Errno 13] Permission denied: '/etc/z'").contains(&"/etc/z".into())
        );
        assert!(
            c("error: could not lock config file .git/config: Read-only file system")
                .contains(&".git/config".into())
        );
        assert!(!c("sh: 1: cannot create /etc/x: Read-only file system").contains(&"1".into()));
        assert!(
            c("sh: 1: cannot create .git/config: Read-only file system")
                .contains(&".git/config".into())
        );
        assert_eq!(
            c("PermissionError: [Errno 13] Permission denied: '/etc/z'"),
            ["/etc/z"]
        );
    }

    fn entries(ws: &Path) -> Vec<FsEntry> {
        let e = |path: &Path, access| FsEntry {
            path: path.to_path_buf(),
            access,
            origin: "test",
            skip_if_missing: false,
        };
        vec![
            e(Path::new("/"), Access::Read),
            e(ws, Access::Write),
            e(&ws.join(".git"), Access::Read),
        ]
    }

    #[test]
    fn only_what_the_policy_denies_counts() {
        let dir = std::env::temp_dir().join(format!("stk-stderr-{}", std::process::id()));
        let ws = dir.join("ws");
        std::fs::create_dir_all(ws.join(".git")).unwrap();
        let hidden = ws.join("secret");
        // A file only its owner may write, not read: a verb-less refusal may be the read.
        std::fs::write(dir.join("y"), "").unwrap();
        std::fs::set_permissions(
            dir.join("y"),
            std::os::unix::fs::PermissionsExt::from_mode(0o200),
        )
        .unwrap();
        let mut mounts =
            vec![[vec![0u8], ws.join(".git").as_os_str().as_bytes().to_vec()].concat()];
        mounts.push([vec![2u8], hidden.as_os_str().as_bytes().to_vec()].concat());
        let mut ev = StderrEvidence::new(&entries(&ws), &mounts, &ws);
        let text = format!(
            "sh: 1: cannot create {}/x: Permission denied\n\
             bash: .git/config: Read-only file system\n\
             cat: secret: Permission denied\n\
             chmod: changing permissions of 'inside': Operation not permitted\n\
             cat: {}/y: Permission denied\n\
             unfinished {}/z: Read-only file sys",
            dir.display(),
            dir.display(),
            dir.display()
        );
        let (found, skipped) = ev.feed(text.as_bytes());
        assert!(!skipped);
        let got: Vec<(String, String)> = found
            .iter()
            .map(|d| (d.access[0].clone(), d.path.clone().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("write".to_string(), format!("{}/x", dir.display())),
                ("write".to_string(), format!("{}/.git/config", ws.display())),
                ("read".to_string(), format!("{}/secret", ws.display())),
            ]
        );
        // The partial line completes with the next chunk.
        let (found, _) = ev.feed(b"tem\n");
        assert_eq!(found.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
